"""How the model gets what it needs of the data: one callback, at one point of Lightning's hook order.

A ``fit``, ``validate``, ``test`` or ``predict`` runs, in this order: the data module's
``setup`` (labels known, tokenizer loaded or trained, aligner made), every callback's
``setup``, the LightningModule's ``setup``, then ``configure_model`` (where ``NERModel``
builds its network), and only after that loads a checkpoint's weights. A callback's ``setup``
is thus the one point where the data is ready and the network does not exist yet, in every
process: each DDP rank runs the whole order. There :class:`DataHandover` gives the model the
data module's :class:`~ner_lit.data.tagger_data.TaggerData`, through ``NERModel.use_data``.

The model names the callback in its ``configure_callbacks``, so that a plain
``Trainer.fit(model, datamodule=dm)`` works as the CLI does, and the model never reads the
data module. Without a Trainer (``NERModel.load_from_checkpoint``) nothing is handed over:
the model makes the tokenizer and aligner from the checkpoint's spec.
"""
from __future__ import annotations

import lightning.pytorch as pl

from ner_lit.data.datamodule import NERDataModule


class DataHandover(pl.Callback):
    """After the data module's ``setup``, hands its tagger data to the model (``use_data``)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        data = trainer.datamodule
        if isinstance(data, NERDataModule):
            pl_module.use_data(data.tagger_data())
