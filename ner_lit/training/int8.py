"""``--quantize int8|int8-small`` for ``test``, ``validate`` and ``predict``: the checkpoint's network run with int8 weights.

What ``serve --quantize int8`` serves, measured or used on the user's own files: the official
scores of ``test`` are then the int8 model's, and ``predict`` writes its answers. The same
:meth:`~ner_lit.inference.predictor.Predictor.quantize` makes it (ONNX Runtime, int8 weights, the
answer check against the float model on example sentences); where the check refuses it, the float
model runs and one line on stderr says why.
"""
from __future__ import annotations

import sys
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from transformers.modeling_outputs import TokenClassifierOutput

from ner_lit.inference.quantization import QUANTIZE_CHOICES


class Int8Evaluation(pl.Callback):
    """Swaps the module's network for an int8 ONNX Runtime graph of it before an evaluation starts."""

    def __init__(self, quantize: str = "int8", cache: Optional[Any] = None) -> None:
        if quantize not in QUANTIZE_CHOICES:
            raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
        self.quantize = quantize
        self.cache = cache
        self.status = ""

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap(pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap(pl_module)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap(pl_module)

    def _swap(self, pl_module: Any) -> None:
        if self.quantize == "none" or getattr(pl_module, "runtime", None) is not None:
            return
        from ner_lit.inference.loading import LoadedTagger
        from ner_lit.inference.predictor import Predictor

        spec = pl_module.spec
        if pl_module.crf is not None:
            spec = spec.with_crf(*pl_module.crf.scores())
        predictor = Predictor._of(LoadedTagger(pl_module.model, pl_module.tokenizer, spec, "evaluation"),
                                  str(pl_module.device))
        predictor.runtime_cache = self.cache
        if predictor.quantize(pack=False, kind=self.quantize):
            pl_module.runtime = Int8Network(predictor.runner.compiled)
            self.status = f"{self.quantize} ({predictor.quantization})"
        else:
            self.status = f"float: {'; '.join(predictor.runtime.refused)}"
        print(f"ner_lit: the network runs {self.status}", file=sys.stderr, flush=True)


class Int8Network:
    """The int8 graph called as the network is (``input_ids=..., attention_mask=...``), its logits on the batch's device."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TokenClassifierOutput:
        return TokenClassifierOutput(logits=self.runtime(input_ids, attention_mask).to(input_ids.device))
