"""The three ways of training and evaluating the same model that the bench scripts compare.

* ``ner_lit``: NERDataModule + NERModel under ``lightning.Trainer`` (length-grouped dynamic
  padding, specials/padding ignored, linear schedule with warmup).
* ``original``: the original system's way: every sentence padded to 128 tokens, special and
  padding tokens trained as ``O``, no length grouping, constant LR, a plain PyTorch loop;
  evaluation with fixed padding, per-sentence Python decoding, scikit-learn + seqeval.
* ``hf``: Hugging Face ``Trainer`` + ``DataCollatorForTokenClassification`` (dynamic
  padding, -100 on specials, linear decay), labels from ner_lit's Aligner (each token takes
  its first character's tag, as the usual first-subword recipe does for word starts);
  evaluation with ``Trainer.predict``, per-sentence decoding, scikit-learn + seqeval.

Training throughput is measured by a clock at the end of every optimizer step (data loading,
forward, backward and optimizer step included; setup, model loading and evaluation excluded).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import torch

from bench import common


class Clock:
    """Step-end timestamps and batch sizes; throughput over a window after warm-up."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.sizes: list[int] = []
        self.tokens: list[int] = []  # padded positions (rows x width)
        self.real_tokens: list[int] = []

    def tick(self, batch: dict[str, Any]) -> None:
        self.times.append(time.perf_counter())
        ids = batch["input_ids"]
        self.sizes.append(int(ids.shape[0]))
        self.tokens.append(int(ids.numel()))
        self.real_tokens.append(int(batch["attention_mask"].sum()))

    def window(self, warmup: int) -> dict[str, float]:
        """Steps warmup+1 .. end, timed from the end of step ``warmup``."""
        t = self.times[-1] - self.times[warmup - 1]
        n = sum(self.sizes[warmup:])
        return {
            "sentences_per_s": n / t,
            "seconds": t,
            "steps": len(self.times) - warmup,
            "sentences": n,
            "padded_tokens_per_sentence": sum(self.tokens[warmup:]) / n,
            "real_tokens_per_sentence": sum(self.real_tokens[warmup:]) / n,
        }


# ---------------------------------------------------------------------------- ner_lit
def ner_lit_train(args, model_dir: Path, steps: int, clock: Optional[Clock] = None, precision: str = "32-true",
                  dm_overrides: Optional[dict] = None, model_overrides: Optional[dict] = None, seed: int = common.SEED,
                  callbacks: Optional[list] = None):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback

    class _Tick(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if clock is not None:
                clock.tick(batch)

    pl.seed_everything(seed, verbose=False)
    dm = common.make_datamodule(args, model_dir, **(dm_overrides or {}))
    model = common.make_model(model_dir, **(model_overrides or {}))
    trainer = common.pl_trainer(max_steps=steps, limit_val_batches=0, precision=precision,
                                callbacks=[_Tick()] + list(callbacks or []))
    trainer.fit(model, datamodule=dm)
    return trainer, model, dm


# ---------------------------------------------------------------------------- original
def fixed_collate(pad_id: int, outside_id: int, width: int = common.MAX_LENGTH):
    """Every window padded to ``width``; specials and padding labelled O (trained), as the original system did."""
    from ner_lit.alignment.windows import IGNORE

    def collate(windows) -> dict[str, torch.Tensor]:
        ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(windows), width), dtype=torch.long)
        labels = torch.full((len(windows), width), outside_id, dtype=torch.long)
        for r, w in enumerate(windows):
            n = len(w.input_ids)
            ids[r, :n] = torch.tensor(w.input_ids)
            mask[r, :n] = 1
            if w.labels is not None:
                lab = torch.tensor(w.labels)
                labels[r, :n] = torch.where(lab == IGNORE, torch.full_like(lab, outside_id), lab)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


def load_hf_model(model_dir: Path, labels: list[str]):
    from transformers import AutoConfig, AutoModelForTokenClassification

    id2label = dict(enumerate(labels))
    config = AutoConfig.from_pretrained(model_dir, num_labels=len(labels), id2label=id2label,
                                        label2id={v: k for k, v in id2label.items()})
    return AutoModelForTokenClassification.from_pretrained(model_dir, config=config, ignore_mismatched_sizes=True)


def prepared_data(args, model_dir: Path):
    """NERDataModule set up for fit (train windows, dev items), without a Trainer."""
    dm = common.make_datamodule(args, model_dir)
    dm.setup("fit")
    return dm


def original_train(args, model_dir: Path, steps: int, clock: Clock, dm=None, seed: int = common.SEED):
    torch.manual_seed(seed)
    dm = dm or prepared_data(args, model_dir)
    model = load_hf_model(model_dir, dm.labels)
    model.train()
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dm.train_windows, batch_size=common.BATCH_SIZE, shuffle=True, generator=g,
                                         collate_fn=fixed_collate(dm._pad_id(), dm.aligner.outside_id))
    opt = torch.optim.AdamW(model.parameters(), lr=common.LEARNING_RATE, weight_decay=0.01)
    step = 0
    while step < steps:
        for batch in loader:
            out = model(**batch)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            clock.tick(batch)
            step += 1
            if step >= steps:
                break
    return model


# ---------------------------------------------------------------------------- HF Trainer
def hf_rows(windows) -> list[dict[str, list[int]]]:
    return [{"input_ids": list(w.input_ids), "attention_mask": [1] * len(w.input_ids), "labels": list(w.labels)}
            for w in windows]


def hf_args(out: Path, steps: int = -1, epochs: float = 3.0, bf16: bool = False, seed: int = common.SEED,
            batch_size: int = common.BATCH_SIZE, learning_rate: float = common.LEARNING_RATE, eval_batch_size: int = 64, **kw):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=batch_size, per_device_eval_batch_size=eval_batch_size,
        learning_rate=learning_rate, max_steps=steps, num_train_epochs=epochs, lr_scheduler_type="linear",
        seed=seed, use_cpu=True, report_to="none", save_strategy="no", eval_strategy="no", logging_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, bf16=bf16, **kw,
    )


def head_rate_trainer(head_learning_rate: float):
    """A ``Trainer`` whose AdamW gives the head (what lies outside ``base_model``) its own peak rate.

    The groups are Trainer's own (weight decay except on biases and norms, frozen parameters left
    out), each split into encoder and head, so the scheduler Trainer builds scales both alike.
    """
    from transformers import Trainer

    class HeadRateTrainer(Trainer):
        def create_optimizer(self, model=None):
            if self.optimizer is None:
                model = self.model if model is None else model
                decay = set(self.get_decay_parameter_names(model))
                encoder = {id(p) for p in model.base_model.parameters()}
                groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
                for name, p in model.named_parameters():
                    if p.requires_grad:
                        groups.setdefault((id(p) not in encoder, name in decay), []).append(p)
                cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
                self.optimizer = cls([{"params": ps, "lr": head_learning_rate if head else self.args.learning_rate,
                                       "weight_decay": self.args.weight_decay if dec else 0.0}
                                      for (head, dec), ps in sorted(groups.items())], **kwargs)
            return self.optimizer

    return HeadRateTrainer


def hf_train(args, model_dir: Path, steps: int, clock: Optional[Clock] = None, dm=None, seed: int = common.SEED,
             epochs: float = 3.0, bf16: bool = False, head_learning_rate: Optional[float] = None,
             freeze_word_embeddings: bool = False, out: Optional[Path] = None, callbacks: Optional[list] = None, **train_kw):
    """``train_kw`` goes to :func:`hf_args` (batch_size, learning_rate, weight_decay, warmup_steps, ...)."""
    from transformers import DataCollatorForTokenClassification, Trainer, TrainerCallback

    class _Tick(TrainerCallback):
        def __init__(self):
            self.batch = None

        def on_step_end(self, a, state, control, **kwargs):
            if clock is not None and self.batch is not None:
                clock.tick(self.batch)

    tick = _Tick()
    dm = dm or prepared_data(args, model_dir)
    torch.manual_seed(seed)
    model = load_hf_model(model_dir, dm.labels)
    if freeze_word_embeddings:  # as NERModel(freeze_word_embeddings=True): no gradient, no AdamW state
        model.get_input_embeddings().weight.requires_grad_(False)
    collator = DataCollatorForTokenClassification(dm.tokenizer)

    def collate(rows):  # remember the batch for the clock
        batch = collator(rows)
        tick.batch = batch
        return batch

    cls = Trainer if head_learning_rate is None else head_rate_trainer(head_learning_rate)
    trainer = cls(model=model, args=hf_args(out or common.WORK / "hf-trainer", steps=steps, epochs=epochs, bf16=bf16,
                                            seed=seed, **train_kw),
                  train_dataset=hf_rows(dm.train_windows), data_collator=collate, callbacks=[tick] + list(callbacks or []))
    trainer.train()
    return trainer, model
