"""Word embeddings trained by sparse row updates: only the rows a batch used move.

Most of a multilingual encoder's weights are its word embeddings (multilingual-e5-small: 96 M
of 117.5 M), and a batch of Korean sentences uses a few hundred of their 250,037 rows. AdamW
over the whole table reads and writes every row and its two moments at every step, which on
2 CPU cores made a step about 8x slower than with the table frozen. Here the table gets a
sparse gradient (``nn.Embedding(sparse=True)``) and its own optimizer, torch's ``SparseAdam``:
Adam whose moments move only for the rows the gradient holds ("lazy" Adam), with no weight
decay. AdamW trains everything else as before and never sees the table.

:class:`SparseWordEmbeddings` is a callback, so that the optimizer Lightning steps stays the
one ``configure_optimizers`` returns: it steps ``SparseAdam`` in ``on_before_optimizer_step``
(after the backward, once per optimizer step, also under gradient accumulation) at the rate
AdamW would give the table (its layer-decay group's peak times the schedule's current factor),
and its state rides in the checkpoint's callback states, so a resumed run goes on exactly.
The table's gradient is not part of the gradient-norm clipping.
"""
from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
import torch

from ner_lit.training.optimization import encoder_rates
from ner_lit.training.settings import ModelError


class SparseWordEmbeddings(pl.Callback):
    """Trains the input word embeddings of ``NERModel`` (``--model.sparse_word_embeddings true``) row by row."""

    def __init__(self) -> None:
        self.optimizer: Optional[torch.optim.SparseAdam] = None
        self._restored: Optional[dict[str, Any]] = None

    @staticmethod
    def table(pl_module: pl.LightningModule) -> torch.nn.Embedding:
        return pl_module.model.get_input_embeddings()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            raise ModelError("--model.sparse_word_embeddings runs on one device only: its sparse gradients are "
                             "not reduced across DDP ranks; train the table dense or frozen there")
        table = self.table(pl_module)
        table.sparse = True
        table.weight.requires_grad_(True)
        settings = pl_module.optimization
        self.peak = encoder_rates(pl_module.model.base_model, settings)[id(table.weight)][2]
        self.optimizer = torch.optim.SparseAdam([table.weight], lr=self.peak, eps=settings.adam_epsilon)
        if self._restored is not None:
            self.optimizer.load_state_dict(self._restored)
            self._restored = None

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        weight = self.table(pl_module).weight
        if self.optimizer is None or weight.grad is None:
            return
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        for group in self.optimizer.param_groups:
            group["lr"] = self.peak * scheduler.lr_lambdas[0](scheduler.last_epoch)
        self.optimizer.step()
        weight.grad = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.table(pl_module).sparse = False  # an exported or evaluated network is the plain one

    def state_dict(self) -> dict[str, Any]:
        return {} if self.optimizer is None else {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict.get("optimizer")
