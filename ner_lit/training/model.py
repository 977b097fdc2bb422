"""NERModel: any Hugging Face token classifier, trained on windows, scored on characters.

The Lightning seam of :mod:`ner_lit.training`: steps, metrics, the checkpoint hooks. Its
settings are grouped in :mod:`~ner_lit.training.settings`; the network is built by
:mod:`~ner_lit.training.network`, AdamW set up by :mod:`~ner_lit.training.optimization`, the
checkpoint section written and read by :mod:`~ner_lit.training.section`; what it needs of the
data arrives through :mod:`~ner_lit.training.handover`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import lightning.pytorch as pl
import torch
from torchmetrics import MeanMetric

from ner_lit.alignment.aligner import Aligner
from ner_lit.alignment.answers import answer
from ner_lit.checkpoint.spec import TaggerSpec
from ner_lit.data.tagger_data import TaggerData
from ner_lit.training.analysis import EntityErrors
from ner_lit.training.crf import CRFHead
from ner_lit.training.handover import DataHandover
from ner_lit.training.loss import tagging_loss
from ner_lit.training.metrics import CharMacroF1, EntityMacroF1
from ner_lit.training.network import build_network
from ner_lit.training.optimization import clip_unscaled, configure_adamw
from ner_lit.training.report import scored, write_error_analysis, write_report
from ner_lit.training.section import read_section, write_section
from ner_lit.training.settings import ADAMW_IMPLEMENTATIONS, ModelError, NetworkSettings, OptimizerSettings
from ner_lit.training.sparse_embeddings import SparseWordEmbeddings

__all__ = ["ADAMW_IMPLEMENTATIONS", "ModelError", "NERModel"]


class NERModel(pl.LightningModule):
    """Token classification over the windows of ``NERDataModule``.

    What the network is trained for (labels, tokenizer, windows) is a
    :class:`~ner_lit.checkpoint.spec.TaggerSpec`, known only once the training file has been read
    or a checkpoint chosen, which is why the network is built in ``configure_model`` and not in
    ``__init__``. Under a Trainer, the spec, the tokenizer and the aligner come from the data
    module as one :class:`~ner_lit.data.tagger_data.TaggerData`, handed to :meth:`use_data` by the
    callback :meth:`configure_callbacks` installs; a spec given earlier to :meth:`use_spec` wins.
    ``load_from_checkpoint`` needs neither a Trainer nor data, since :meth:`on_load_checkpoint`
    reads the checkpoint's own spec (and the tokenizer and aligner are then made from it).
    The model completes the spec with its network's config and writes it into every checkpoint.
    """

    def __init__(
        self,
        pretrained: Optional[str] = None,
        hidden_size: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_size: Optional[int] = None,
        dropout: Optional[float] = None,
        head: Literal["softmax", "crf"] = "softmax",
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        schedule: Literal["linear", "cosine", "constant"] = "linear",
        adam_epsilon: float = 1e-8,
        freeze_word_embeddings: bool = False,
        sparse_word_embeddings: bool = False,
        head_learning_rate: Optional[float] = None,
        layer_decay: Optional[float] = None,
        adamw: Literal["fused", "foreach", "for_loop"] = "fused",
    ) -> None:
        """The arguments stay flat, one ``--model.*`` option each (LightningCLI builds the options from
        this signature, ``load_from_checkpoint`` passes saved hyperparameters back by name), and are
        packed at once into the groups of :mod:`ner_lit.training.settings`, under whose headings they are listed.

        Args:
            [NetworkSettings]: the network a new tagger starts from.
            pretrained: Hugging Face hub id or local directory of an encoder (e.g. ``klue/roberta-base``).
                None trains a BERT from scratch, sized by the four options below.
            hidden_size: Scratch BERT: hidden size.
            num_layers: Scratch BERT: transformer layers.
            num_heads: Scratch BERT: attention heads.
            intermediate_size: Scratch BERT: feed-forward size (default 4 x hidden_size).
            dropout: Hidden and attention dropout of the encoder; None keeps a pretrained encoder's own (0.1 for a scratch BERT).
            head: ``softmax`` scores each position's tag on its own (decoded by the IOB2 Viterbi);
                ``crf`` adds a linear-chain CRF over the positions: learned transition scores, trained
                by sequence likelihood, decoded by the same constrained Viterbi with them
                (:mod:`ner_lit.training.crf`). A checkpoint's tagger brings its own head.

            [OptimizerSettings]: AdamW, its learning-rate schedule, and which parameters it trains.
            learning_rate: AdamW peak learning rate.
            weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
            warmup_ratio: Fraction of the training steps with a linear warmup (step k of w runs at (k+1)/(w+1) of the peak).
            schedule: ``linear`` decays to 0 after the warmup, ``cosine`` along half a cosine; ``constant`` keeps the peak rate.
            adam_epsilon: AdamW epsilon.
            freeze_word_embeddings: Keep the input word embeddings fixed: they get no gradient and no AdamW
                state. For large-vocabulary encoders (an XLM-R vocabulary is most of a small model's
                weights), this saves the optimizer memory and step time of rows that mostly never
                occur in the training data; positions, LayerNorms and the layers still train.
            sparse_word_embeddings: Train the input word embeddings row by row: each step updates only the rows its
                batch used, by their own lazy Adam (no weight decay, the embeddings' rate), at close to the frozen
                speed; the optimizer state is still two copies of the table (:mod:`ner_lit.training.sparse_embeddings`).
            head_learning_rate: Peak learning rate of the classification head (the parameters outside
                the encoder), on the same warmup and decay; None uses ``learning_rate``. A freshly
                initialised head often wants a higher rate than the pretrained encoder.
            layer_decay: Layer-wise rate decay: the top layer runs at ``learning_rate``, each one below
                (the embeddings last) at ``layer_decay`` x the rate above it; None: one encoder rate.
            adamw: How AdamW runs its update, the same arithmetic up to float rounding: ``fused``, one
                kernel per parameter (the Hugging Face Trainer's default); ``foreach``, one op over all
                parameters; ``for_loop``, torch's CPU default, the slowest (the update is memory-bound).
        """
        super().__init__()
        self.optimization = OptimizerSettings(
            learning_rate=learning_rate, weight_decay=weight_decay, warmup_ratio=warmup_ratio, schedule=schedule,
            adam_epsilon=adam_epsilon, freeze_word_embeddings=freeze_word_embeddings, sparse_word_embeddings=sparse_word_embeddings,
            head_learning_rate=head_learning_rate, layer_decay=layer_decay, adamw=adamw)
        self.network = NetworkSettings(pretrained=pretrained, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                                       intermediate_size=intermediate_size, dropout=dropout, head=head)
        self.save_hyperparameters()
        self.model = None
        self.crf: Optional[CRFHead] = None
        self.runtime = None  # what runs instead of the network: an evaluation's int8 graph (training.int8)
        self.labels: list[str] = []
        self.spec: Optional[TaggerSpec] = None
        self._tokenizer = None
        self._aligner: Optional[Aligner] = None

    # ------------------------------------------------------------------ building
    def use_spec(self, spec: TaggerSpec) -> None:
        """Build for this tagger spec: a checkpoint's (its own network config, no hub, no training data)
        or a data module's (a new network from ``pretrained`` or from scratch). Call before ``configure_model``."""
        if self.model is not None:
            raise ModelError("use_spec after the network was built: give the spec before configure_model")
        self.spec = spec
        self.labels = list(spec.labels)

    def use_data(self, data: TaggerData) -> None:
        """Take what the data module prepared: its spec, unless the model has one, and the tokenizer and
        aligner that encoded the batches this model will score (it decodes its logits with that aligner)."""
        if self.spec is None:
            self.use_spec(data.spec)
        elif tuple(self.spec.labels) != data.labels:
            raise ModelError(f"the data's labels {list(data.labels)} are not the tagger's {list(self.spec.labels)}")
        self._tokenizer, self._aligner = data.tokenizer, data.aligner

    def configure_callbacks(self) -> list[pl.Callback]:
        """The hand-over of the data (:mod:`ner_lit.training.handover`), so that a plain ``Trainer`` gets it as the CLI
        does, and the row-by-row training of the word embeddings where asked for."""
        sparse = [SparseWordEmbeddings()] if self.optimization.sparse_word_embeddings else []
        return sparse + ([] if any(isinstance(c, DataHandover) for c in self.trainer.callbacks) else [DataHandover()])

    @property
    def tokenizer(self):
        """The tokenizer the data module handed over, else the one rebuilt from the spec's files."""
        if self._tokenizer is None:
            self._tokenizer = self._require_spec().tokenizer()
        return self._tokenizer

    @property
    def aligner(self) -> Aligner:
        """The alignment training and evaluation used (the data module's, or one made from the spec)."""
        if self._aligner is None:
            self._aligner = Aligner.for_tagger(self.tokenizer, self._require_spec())
        return self._aligner

    def _require_spec(self) -> TaggerSpec:
        if self.spec is None:
            raise ModelError("the model has no tagger spec: set up a data module, call use_spec, or load a checkpoint")
        return self.spec

    def configure_model(self) -> None:
        if self.model is None and self.spec is not None:  # no spec: load_from_checkpoint, on_load_checkpoint builds
            self._build(self.spec)

    def _build(self, spec: TaggerSpec) -> None:
        self.model, self.spec = build_network(spec, self.network, lambda: self.tokenizer)
        # A checkpoint's tagger (it has a model config) has a CRF exactly when its record holds one.
        if (spec.crf is not None) if spec.model_config is not None else self.network.head == "crf":
            self.crf = CRFHead(len(spec.labels))
        # from_pretrained returns the model in eval mode (dropout off); Lightning switches modes
        # only for modules it saw change, so a pretrained model would be fine-tuned without dropout.
        self.model.train(self.training)
        if self.optimization.freeze_word_embeddings:
            self.model.get_input_embeddings().weight.requires_grad_(False)
        for split in ("val", "test"):
            setattr(self, f"{split}_F1c", CharMacroF1(self.labels))
            setattr(self, f"{split}_F1e", EntityMacroF1(self.labels))
            setattr(self, f"{split}_loss", MeanMetric())
            setattr(self, f"{split}_acc", MeanMetric())
        self.test_errors = EntityErrors(self.labels)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        return configure_adamw(self.model, self.optimization, self.trainer.estimated_stepping_batches, self.crf)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip as Lightning does, also for the fused AdamW under bf16-mixed, which Lightning refuses (see ``clip_unscaled``)."""
        plugin = self.trainer.precision_plugin if self._trainer is not None else None
        if (gradient_clip_val and getattr(plugin, "scaler", None) is None
                and getattr(optimizer, "_step_supports_amp_scaling", False)):
            clip_unscaled(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)

    # ------------------------------------------------------------------ steps
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """The network's output; its ``logits`` are ``[windows, positions, outputs]`` (labels, or slots x labels).
        The loss is :meth:`_loss`'s: a ``char`` tagger's labels are not the Hugging Face head's."""
        return (self.runtime or self.model)(input_ids=input_ids, attention_mask=attention_mask)

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits as ``[..., labels]`` rows, one per label the batch carries (per token, or per
        token and character slot: the labels then are ``[windows, positions, slots]``)."""
        return logits.reshape(*logits.shape[:2], -1, len(self.labels)) if self.spec.tagging == "char" else logits

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The loss, accuracy and labelled count of :func:`~ner_lit.training.loss.tagging_loss`."""
        return tagging_loss(self._scores(logits), labels, self.crf)

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
        decoded = self.aligner.decode([it.encoded for it in items], logits.detach().float().cpu(), crf=self._crf_scores())
        preds = [tags[it.scored] for tags, it in zip(decoded.char_tags, items)]
        gold = [it.gold for it in items]
        getattr(self, f"{split}_F1c").update(preds, gold)
        getattr(self, f"{split}_F1e").update(preds, gold)
        if split == "test":
            self.test_errors.update(preds, gold, [it.sentence.text for it in items], [it.scored for it in items],
                                    [it.sentence.id for it in items])
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
        self.test_errors.gather_examples()  # a collective: every rank takes part
        analysis = self.test_errors.compute()
        if self.trainer.is_global_zero:
            about = scored(self.trainer)
            write_report(report, log_dir, echo=True, about=about)
            write_error_analysis(analysis, log_dir, about, self.trainer.ckpt_path)
        self.test_errors.reset()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """One row a sentence: ``id``, ``index`` (its position in the input), ``text`` and ``entities``."""
        logits = self(batch["input_ids"], batch["attention_mask"]).logits
        items = batch["items"].items
        decoded = self.aligner.decode([it.encoded for it in items], logits.float().cpu(), crf=self._crf_scores())
        return [{"id": it.sentence.id, "index": it.index,
                 **answer(it.sentence.text, self.aligner.tag_names(tags), probs.tolist())}
                for it, tags, probs in zip(items, decoded.char_tags, decoded.char_probs)]

    # ------------------------------------------------------------------ checkpoints
    def _crf_scores(self):
        """The CRF head's current scores for the decoder (None without a CRF)."""
        return None if self.crf is None else self.crf.scores()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        write_section(checkpoint, self._require_spec(), self._trainer, self._crf_scores())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Without a Trainer (``NERModel.load_from_checkpoint``), build the network from the checkpoint's own
        spec before its weights load, after the same checks ``test``/``serve`` run on a file."""
        if self.model is not None:
            return  # under the Trainer the spec came with the data (checked by the CLI) and configure_model built the network
        spec = read_section(checkpoint)
        self.use_spec(spec)
        self._build(spec)
