"""NERModel: any Hugging Face token classifier, trained on windows, scored on characters."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

import lightning.pytorch as pl
import torch
from torchmetrics import MeanMetric

from ner_lit.alignment.answers import answer
from ner_lit.alignment.windows import IGNORE
from ner_lit.checkpoint.format import CheckpointError, weights_digest
from ner_lit.checkpoint.spec import SECTION, SpecError, TaggerSpec
from ner_lit.errors import UserError
from ner_lit.training.metrics import CharMacroF1, EntityMacroF1

#: ``NERModel(adamw=...)``: the torch.optim.AdamW arguments of each implementation.
ADAMW_IMPLEMENTATIONS: dict[str, dict[str, bool]] = {
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "for_loop": {"foreach": False},
}


class ModelError(UserError):
    """A model setting that can not work (a pretrained model that can not be found, ...)."""


class NERModel(pl.LightningModule):
    """Token classification over the windows of ``NERDataModule``.

    What the network is trained for (labels, tokenizer, windows) is a
    :class:`~ner_lit.spec.TaggerSpec`, known only once the training file has been read or a
    checkpoint chosen, which is why the network is built in ``configure_model`` and not in
    ``__init__``. The spec reaches the model through :meth:`use_spec` (the CLI, from a
    checkpoint), else from the attached datamodule's ``spec``; ``load_from_checkpoint`` needs
    neither a Trainer nor data, since :meth:`on_load_checkpoint` reads the checkpoint's own.
    The model completes the spec with its network's config and writes it into every checkpoint.
    """

    def __init__(
        self,
        pretrained: Optional[str] = None,
        hidden_size: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_size: Optional[int] = None,
        dropout: float = 0.1,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        schedule: Literal["linear", "constant"] = "linear",
        adam_epsilon: float = 1e-8,
        freeze_word_embeddings: bool = False,
        head_learning_rate: Optional[float] = None,
        adamw: Literal["fused", "foreach", "for_loop"] = "fused",
    ) -> None:
        """
        Args:
            pretrained: Hugging Face hub id or local directory of an encoder (e.g. ``klue/roberta-base``).
                None trains a BERT from scratch, sized by the four options below.
            hidden_size: Scratch BERT: hidden size.
            num_layers: Scratch BERT: transformer layers.
            num_heads: Scratch BERT: attention heads.
            intermediate_size: Scratch BERT: feed-forward size (default 4 x hidden_size).
            dropout: Scratch BERT: hidden and attention dropout.
            learning_rate: AdamW peak learning rate.
            weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
            warmup_ratio: Fraction of the training steps with a linear warmup (step k of w runs at (k+1)/(w+1) of the peak).
            schedule: ``linear`` decays to 0 after the warmup; ``constant`` keeps the peak rate.
            adam_epsilon: AdamW epsilon.
            freeze_word_embeddings: Keep the input word embeddings fixed: they get no gradient and no AdamW
                state. For large-vocabulary encoders (an XLM-R vocabulary is most of a small model's
                weights), this saves the optimizer memory and step time of rows that mostly never
                occur in the training data; positions, LayerNorms and the layers still train.
            head_learning_rate: Peak learning rate of the classification head (the parameters outside
                the encoder), on the same warmup and decay; None uses ``learning_rate``. A freshly
                initialised head often wants a higher rate than the pretrained encoder.
            adamw: How AdamW runs its update, all three the same arithmetic (equal up to float rounding):
                ``fused``, one kernel over each parameter (what the Hugging Face Trainer uses by default);
                ``foreach``, one op over all parameters at a time; ``for_loop``, torch's default on a CPU,
                several passes over every parameter tensor, the slowest. The update is memory-bound, so
                the fewer passes the shorter the optimizer step.
        """
        super().__init__()
        if adamw not in ADAMW_IMPLEMENTATIONS:
            raise ModelError(f"--model.adamw {adamw!r}: expected one of {', '.join(ADAMW_IMPLEMENTATIONS)}")
        self.save_hyperparameters()
        self.model = None
        self.labels: list[str] = []
        self.spec: Optional[TaggerSpec] = None
        self._tokenizer = None
        self._aligner = None

    # ------------------------------------------------------------------ building
    def use_spec(self, spec: TaggerSpec) -> None:
        """Build for this tagger spec: a checkpoint's (its own network config, no hub, no training data)
        or a datamodule's (a new network from ``pretrained`` or from scratch). Call before ``configure_model``."""
        if self.model is not None:
            raise ModelError("use_spec after the network was built: give the spec before configure_model")
        self.spec = spec
        self.labels = list(spec.labels)

    @property
    def tokenizer(self):
        """The spec's tokenizer: the datamodule's own object when one is attached, else rebuilt from the spec's files."""
        if self._tokenizer is None:
            dm = self._datamodule()
            self._tokenizer = dm.tokenizer if dm is not None and dm.tokenizer is not None else self._require_spec().tokenizer()
        return self._tokenizer

    @property
    def aligner(self):
        """The alignment training and evaluation used (the datamodule's, or one made from the spec)."""
        if self._aligner is None:
            dm = self._datamodule()
            if dm is not None and dm.aligner is not None:
                self._aligner = dm.aligner
            else:
                from ner_lit.alignment.aligner import Aligner

                self._aligner = Aligner.for_tagger(self.tokenizer, self._require_spec())
        return self._aligner

    def _datamodule(self):
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def _require_spec(self) -> TaggerSpec:
        if self.spec is None:
            raise ModelError("the model has no tagger spec: attach a datamodule, call use_spec, or load a checkpoint")
        return self.spec

    def configure_model(self) -> None:
        if self.model is not None:
            return
        if self.spec is None:
            dm = self._datamodule()
            if dm is None:
                return  # load_from_checkpoint: on_load_checkpoint builds from the checkpoint's own spec
            self.use_spec(dm.spec)
        self._build(self._require_spec())

    def _build(self, spec: TaggerSpec) -> None:
        from transformers import AutoConfig, AutoModelForTokenClassification

        id2label = spec.id2label  # under char tagging, a row of labels per character slot
        label2id = {v: k for k, v in id2label.items()}
        hp = self.hparams
        if spec.model_config is not None:
            self.model = AutoModelForTokenClassification.from_config(spec.hf_config())
        elif hp.pretrained is not None:
            try:
                config = AutoConfig.from_pretrained(hp.pretrained, num_labels=spec.num_outputs, id2label=id2label, label2id=label2id)
                self.model = AutoModelForTokenClassification.from_pretrained(hp.pretrained, config=config, ignore_mismatched_sizes=True)
            except OSError as exc:
                raise ModelError(
                    f"--model.pretrained {hp.pretrained!r}: neither a local model directory nor reachable on the "
                    f"Hugging Face hub ({str(exc).splitlines()[0][:200]})"
                ) from None
        else:
            from ner_lit.data.scratch import scratch_bert_config

            config = scratch_bert_config(
                vocab_size=len(self.tokenizer), labels=[id2label[i] for i in range(spec.num_outputs)],
                hidden_size=hp.hidden_size, num_layers=hp.num_layers,
                num_heads=hp.num_heads, intermediate_size=hp.intermediate_size,
                pad_token_id=self.tokenizer.pad_token_id or 0,
            )
            config.hidden_dropout_prob = config.attention_probs_dropout_prob = hp.dropout
            self.model = AutoModelForTokenClassification.from_config(config)
        # from_pretrained returns the model in eval mode (dropout off); Lightning switches modes
        # only for modules it saw change, so a pretrained model would be fine-tuned without dropout.
        self.model.train(self.training)
        if hp.freeze_word_embeddings:
            self.model.get_input_embeddings().weight.requires_grad_(False)
        if self.model.config.num_labels != spec.num_outputs:
            raise ModelError(f"the model has {self.model.config.num_labels} outputs, the data's labels and tagging "
                             f"need {spec.num_outputs}")
        if spec.model_config is None:  # a new network: the spec records it, and where its weights came from
            from dataclasses import replace

            spec = replace(spec.with_model_config(json.loads(self.model.config.to_json_string()),
                                                  hp.pretrained or "scratch-bert"),
                           provenance=replace(spec.provenance, pretrained=hp.pretrained))
        self.spec = spec
        for split in ("val", "test"):
            setattr(self, f"{split}_F1c", CharMacroF1(self.labels))
            setattr(self, f"{split}_F1e", EntityMacroF1(self.labels))
            setattr(self, f"{split}_loss", MeanMetric())
            setattr(self, f"{split}_acc", MeanMetric())

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self._param_groups(), lr=hp.learning_rate, eps=hp.adam_epsilon,
                                      **ADAMW_IMPLEMENTATIONS[hp.adamw])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(total * hp.warmup_ratio)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            if hp.schedule == "constant":
                return 1.0
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)  # one factor, every group's own peak
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip as Lightning does, also for the fused AdamW under bf16-mixed.

        Lightning refuses to clip gradients under mixed precision for an optimizer that could
        unscale them itself (the fused AdamW declares it can), because an fp16 loss scaler's
        gradients would be clipped while still scaled. bf16 has no scaler: the gradients are
        the true ones, so they are clipped here over the optimizer's parameters, as Lightning
        clips them in fp32.
        """
        plugin = self.trainer.precision_plugin if self._trainer is not None else None
        if (gradient_clip_val and getattr(plugin, "scaler", None) is None
                and getattr(optimizer, "_step_supports_amp_scaling", False)):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)

    def _param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups of the trainable parameters: weight decay except on biases and LayerNorms, and
        with ``head_learning_rate`` the head (what lies outside ``base_model``) in groups of its own.

        Frozen parameters are left out, so AdamW keeps no state for them. Without a head rate the
        groups are the two unnamed ones of earlier runs, whose optimizer state still resumes.
        """
        hp = self.hparams
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")
        encoder = {id(p) for p in self.model.base_model.parameters()}
        split_head = hp.head_learning_rate is not None
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                head = split_head and id(p) not in encoder
                groups.setdefault((head, name.endswith(no_decay)), []).append(p)
        result = []
        for head in ((False, True) if split_head else (False,)):
            for plain in (False, True):
                group: dict[str, Any] = {"params": groups.get((head, plain), []), "weight_decay": 0.0 if plain else hp.weight_decay}
                if split_head:
                    group["name"] = ("head" if head else "encoder") + ("_no_decay" if plain else "")
                    group["lr"] = hp.head_learning_rate if head else hp.learning_rate
                result.append(group)
        return [g for g in result if g["params"]]

    # ------------------------------------------------------------------ steps
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """The network's output; its ``logits`` are ``[windows, positions, outputs]`` (labels, or slots x labels).
        The loss is :meth:`_loss`'s: a ``char`` tagger's labels are not the Hugging Face head's."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask)

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits as ``[..., labels]`` rows, one per label the batch carries (per token, or per
        token and character slot: the labels then are ``[windows, positions, slots]``)."""
        return logits.reshape(*logits.shape[:2], -1, len(self.labels)) if self.spec.tagging == "char" else logits

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Cross-entropy over every labelled token (or character slot), its accuracy and how many there were.

        The mean over labelled items in float32, as the Hugging Face token classifiers compute it,
        so a ``token`` tagger trains exactly as before.
        """
        scores = self._scores(logits)
        flat, gold = scores.reshape(-1, scores.shape[-1]), labels.reshape(-1)
        loss = torch.nn.functional.cross_entropy(flat.float(), gold, ignore_index=IGNORE)
        mask = gold != IGNORE
        n = int(mask.sum())
        correct = (flat.detach().argmax(-1)[mask] == gold[mask]).float().sum()
        return loss, correct / max(1, n), n

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, acc, _ = self._loss(self(batch["input_ids"], batch["attention_mask"]).logits, batch["labels"])
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", acc)
        return loss

    def _evaluate(self, batch: dict[str, Any], split: str) -> None:
        logits = self(batch["input_ids"], batch["attention_mask"]).logits
        loss, acc, n = self._loss(logits, batch["labels"])
        getattr(self, f"{split}_loss").update(loss, max(1, n))
        getattr(self, f"{split}_acc").update(acc, max(1, n))
        items = batch["items"].items
        decoded = self.aligner.decode([it.encoded for it in items], logits.detach().float().cpu())
        preds = [tags[it.scored] for tags, it in zip(decoded.char_tags, items)]
        gold = [it.gold for it in items]
        getattr(self, f"{split}_F1c").update(preds, gold)
        getattr(self, f"{split}_F1e").update(preds, gold)
        for name in ("loss", "acc", "F1c", "F1e"):
            self.log(f"{split}_{name}", getattr(self, f"{split}_{name}"), on_step=False, on_epoch=True,
                     prog_bar=name in ("F1c", "F1e"), batch_size=len(items))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        report = self.test_F1e.report()
        report["F1c (macro over characters)"] = {"f1": float(self.test_F1c.compute())}
        log_dir = Path(self.trainer.log_dir or ".")  # a broadcast under DDP: every rank must ask
        if self.trainer.is_global_zero:
            from ner_lit.training.report import scored, write_report

            write_report(report, log_dir, echo=True, about=scored(self.trainer))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """One row a sentence: ``id``, ``index`` (its position in the input), ``text`` and ``entities``."""
        logits = self(batch["input_ids"], batch["attention_mask"]).logits
        items = batch["items"].items
        decoded = self.aligner.decode([it.encoded for it in items], logits.float().cpu())
        return [{"id": it.sentence.id, "index": it.index,
                 **answer(it.sentence.text, self.aligner.tag_names(tags), probs.tolist())}
                for it, tags, probs in zip(items, decoded.char_tags, decoded.char_probs)]

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        metrics = self.trainer.callback_metrics if self._trainer is not None else {}
        spec = self._require_spec().with_scores({k: float(v) for k, v in metrics.items() if k.startswith("val_")})
        checkpoint[SECTION] = {
            **spec.to_dict(),
            "monitor": self._monitor_record(metrics),
            # Last, over the weights as they are written: load_checkpoint refuses a file whose tensors differ.
            "weights_sha256": weights_digest(checkpoint["state_dict"]),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Without a Trainer (``NERModel.load_from_checkpoint``), build the network from the checkpoint's own
        spec before its weights load, after the same checks ``test``/``serve`` run on a file."""
        if self.model is not None:
            return  # under the Trainer the CLI gave the spec (checked) and configure_model built the network
        section = checkpoint.get(SECTION)
        where = "the checkpoint"
        try:
            spec = TaggerSpec.from_dict(section, where)
        except SpecError as exc:
            raise CheckpointError(str(exc)) from None
        recorded = section.get("weights_sha256")
        if recorded is not None and weights_digest(checkpoint["state_dict"]) != recorded:
            raise CheckpointError(f"{where}: its weights do not match the digest recorded when it was written "
                                  "(the file is damaged)")
        self.use_spec(spec)
        self._build(spec)

    def _monitor_record(self, metrics: dict[str, Any]) -> Optional[dict[str, Any]]:
        """The monitored score this checkpoint was saved with: ``--ckpt_path best`` picks by it."""
        callback = self.trainer.checkpoint_callback if self._trainer is not None else None
        name = getattr(callback, "monitor", None)
        if not name:
            return None
        score = metrics.get(name)
        return {"name": name, "mode": getattr(callback, "mode", "max"), "score": None if score is None else float(score)}
