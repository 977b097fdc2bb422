"""The model's settings, in typed groups, as Hugging Face's ``run_ner.py`` groups its arguments.

LightningCLI builds the ``--model.*`` options (and the ``model:`` config keys) from the flat
signature of ``NERModel.__init__``, and ``load_from_checkpoint`` passes a checkpoint's saved
hyperparameters back to it by those names, so that signature stays flat. The model packs its
arguments into these frozen groups at once; the network builder and the optimizer read them.
A group's fields are named as its options are.

- :class:`NetworkSettings`: which network: a pretrained encoder, or the size of a scratch BERT;
- :class:`OptimizerSettings`: what is trained and how (AdamW, its schedule, frozen embeddings).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ner_lit.errors import UserError

#: ``NERModel(adamw=...)``: the torch.optim.AdamW arguments of each implementation.
ADAMW_IMPLEMENTATIONS: dict[str, dict[str, bool]] = {
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "for_loop": {"foreach": False},
}


class ModelError(UserError):
    """A model setting that can not work (a pretrained model that can not be found, ...)."""


@dataclass(frozen=True)
class NetworkSettings:
    """The network a new tagger starts from (a checkpoint's tagger brings its own config)."""

    pretrained: Optional[str] = None
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: Optional[int] = None
    dropout: Optional[float] = None
    head: Literal["softmax", "crf"] = "softmax"

    def __post_init__(self) -> None:
        if self.head not in ("softmax", "crf"):
            raise ModelError(f"--model.head {self.head!r}: expected softmax or crf")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ModelError(f"--model.dropout {self.dropout}: expected a probability in [0, 1), e.g. 0.1")


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW, its learning-rate schedule, and which parameters it trains."""

    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    adam_epsilon: float = 1e-8
    freeze_word_embeddings: bool = False
    sparse_word_embeddings: bool = False
    head_learning_rate: Optional[float] = None
    layer_decay: Optional[float] = None
    adamw: Literal["fused", "foreach", "for_loop"] = "fused"

    def __post_init__(self) -> None:
        if self.adamw not in ADAMW_IMPLEMENTATIONS:
            raise ModelError(f"--model.adamw {self.adamw!r}: expected one of {', '.join(ADAMW_IMPLEMENTATIONS)}")
        if self.freeze_word_embeddings and self.sparse_word_embeddings:
            raise ModelError("--model.freeze_word_embeddings and --model.sparse_word_embeddings: the table is either "
                             "frozen or trained row by row; set one of them")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ModelError(f"--model.layer_decay {self.layer_decay}: expected a factor in (0, 1], "
                             "e.g. 0.9 (each layer down runs at 0.9 x the rate of the one above)")
