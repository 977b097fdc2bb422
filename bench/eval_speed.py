"""Full evaluation of dev.tsv: ner_lit vs the original way (a) vs HF Trainer.predict (b), same weights.

Everything from the text file to the two scores is timed: reading + tokenizing (ner_lit:
its encoding cache, as in every epoch after the first), forward, window merge / character
decoding, F1c and F1e.

* ``ner_lit``: ``trainer.validate(model, datamodule)`` wall time (a fresh Trainer every
  round; the datamodule's setup included); ``loop_s`` is the validation loop alone.
* ``original``: tokenizer with fixed padding to 128, batches of 64 sentences in file order,
  forward, per-sentence Python decoding of characters, scikit-learn f1_score + seqeval.
* ``hf_trainer``: tokenizer (dynamic padding by DataCollatorForTokenClassification),
  ``Trainer.predict`` (batch 64), per-sentence decoding, scikit-learn f1_score + seqeval.

All decode characters with the same rule (a token's first character takes its tag, the
following ones ``I-<type>``; whitespace unscored). ner_lit's default token decoding is
Viterbi over valid IOB2 paths (``--data.decoding viterbi``), the other two take each token's
argmax; so ner_lit is also run with ``decoding="argmax"`` (``ner_lit_argmax``), which must give
exactly their F1 on the same weights; the values are reported. ``ner_lit_bf16``: the same
validation under ``precision="bf16-mixed"`` (autocast; information only, not a target). Weights: the HF export of bench/accuracy.py's main
run when it exists (trained 3 epochs), else the untrained reference model (F1 ~ 0).

    python bench/eval_speed.py [--rounds 3] [--weights DIR] [--quick]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

TARGET_SECONDS = 5.0
TARGET_VS_HF = 2.0


def chars_from_tokens(text: str, offsets, tag_ids, labels: list[str]) -> list[str]:
    """Per-sentence Python decoding (the original system's way): scored characters' tags."""
    out = ["O"] * len(text)
    owned = [False] * len(text)
    for (a, b), t in zip(offsets, tag_ids):
        if a == b:
            continue  # special or padding token
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        while a < b and owned[a]:
            a += 1
        tag = labels[t]
        inside = "O" if tag == "O" else "I-" + tag[2:]
        c = a
        while c < b and not owned[c]:
            out[c] = tag if c == a else inside
            owned[c] = True
            c += 1
    return [tag for tag, ch in zip(out, text) if not ch.isspace()]


def gold_tags(sentences) -> list[list[str]]:
    return [[t for ch, t in zip(s.text, s.tags) if not ch.isspace()] for s in sentences]


def run_ner_lit(dm, model, precision: str = "32-true") -> dict:
    """One ``trainer.validate`` (fresh Trainer; the datamodule re-reads dev.tsv and its encoding cache).

    The model and datamodule objects are reused across rounds, so, as for the other two
    systems, loading the weights and the tokenizer is not timed.
    """
    from lightning.pytorch.callbacks import Callback

    class Loop(Callback):
        def on_validation_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()

        def on_validation_end(self, trainer, pl_module):
            self.t = time.perf_counter() - self.t0

    loop = Loop()
    trainer = common.pl_trainer(callbacks=[loop], precision=precision)
    t, out = common.timed(lambda: trainer.validate(model, datamodule=dm, verbose=False))
    return {"seconds": t, "loop_s": loop.t, "decoding": dm.aligner.decoding, "F1c": float(out[0]["val_F1c"]), "F1e": float(out[0]["val_F1e"])}


def run_original(args, weights: Path, tok_dir: Path, labels: list[str], sentences) -> dict:
    import torch
    from transformers import AutoTokenizer

    from bench.systems import load_hf_model

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = load_hf_model(weights, labels).eval()
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds: list[list[str]] = []
    for lo in range(0, len(sentences), 64):
        part = sentences[lo:lo + 64]
        enc = tok([s.text for s in part], padding="max_length", max_length=common.MAX_LENGTH, truncation=True,
                  return_offsets_mapping=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        for j, s in enumerate(part):  # per-sentence Python decoding
            tags = logits[j].argmax(-1).tolist()
            preds.append(chars_from_tokens(s.text, enc["offset_mapping"][j].tolist(), tags, labels))
    forward = time.perf_counter() - t0
    t1 = time.perf_counter()
    f1c, f1e = common.sklearn_seqeval(gold_tags(sentences), preds, labels)
    metric = time.perf_counter() - t1
    return {"seconds": forward + metric, "metric_s": metric, "model_load_s": load, "F1c": f1c, "F1e": f1e}


def run_hf(args, weights: Path, tok_dir: Path, labels: list[str], sentences) -> dict:
    from transformers import AutoTokenizer, DataCollatorForTokenClassification, Trainer

    from bench.systems import hf_args, load_hf_model

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = load_hf_model(weights, labels)
    trainer = Trainer(model=model, args=hf_args(common.WORK / "hf-trainer"), data_collator=DataCollatorForTokenClassification(tok))
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc = tok([s.text for s in sentences], truncation=True, max_length=common.MAX_LENGTH, return_offsets_mapping=True)
    rows = [{"input_ids": ids, "attention_mask": m} for ids, m in zip(enc["input_ids"], enc["attention_mask"])]
    pred = trainer.predict(rows).predictions  # [N, longest, labels], padded by Trainer across batches
    best = pred.argmax(-1)
    preds = [chars_from_tokens(s.text, enc["offset_mapping"][i], best[i, :len(enc["input_ids"][i])].tolist(), labels)
             for i, s in enumerate(sentences)]
    forward = time.perf_counter() - t0
    t1 = time.perf_counter()
    f1c, f1e = common.sklearn_seqeval(gold_tags(sentences), preds, labels)
    metric = time.perf_counter() - t1
    return {"seconds": forward + metric, "metric_s": metric, "model_load_s": load, "F1c": f1c, "F1e": f1e}


def measure(args, weights: Path, tok_dir: Path, labels: list[str], sentences) -> dict[str, list[dict]]:
    """Every system ``args.rounds`` times, interleaved, after the warm-ups; the rounds' results per system."""
    dm = common.make_datamodule(args, tok_dir, labels=labels)
    model = common.make_model(weights)
    run_ner_lit(dm, model)  # warm-up: builds the model, the encoding cache, first-call overheads
    # ner_lit's default decoding is Viterbi (valid IOB2 paths); the other two take each token's argmax,
    # so ner_lit is also run with --data.decoding argmax: that one must give their F1 exactly.
    dm_arg = common.make_datamodule(args, tok_dir, labels=labels, decoding="argmax")
    model_arg = common.make_model(weights)
    run_ner_lit(dm_arg, model_arg)
    rounds: dict[str, list[dict]] = {"ner_lit": [], "ner_lit_argmax": [], "ner_lit_bf16": [], "original": [], "hf_trainer": []}
    run_ner_lit(dm, model, "bf16-mixed")
    for r in range(args.rounds):
        rounds["ner_lit"].append(run_ner_lit(dm, model))
        rounds["ner_lit_bf16"].append(run_ner_lit(dm, model, "bf16-mixed"))
        rounds["ner_lit_argmax"].append(run_ner_lit(dm_arg, model_arg))
        rounds["original"].append(run_original(args, weights, tok_dir, labels, sentences))
        rounds["hf_trainer"].append(run_hf(args, weights, tok_dir, labels, sentences))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f}s" for k, v in rounds.items()), flush=True)
    return rounds


def figures(rounds: dict[str, list[dict]]) -> dict[str, Any]:
    """Medians, F1 of each system, their spread, speed-ups and targets."""
    med = {k: common.median([x["seconds"] for x in v]) for k, v in rounds.items()}
    f1 = {k: {"F1c": v[-1]["F1c"], "F1e": v[-1]["F1e"]} for k, v in rounds.items()}
    same = ("ner_lit_argmax", "original", "hf_trainer")
    spread = max(abs(f1[a][m] - f1[b][m]) for a in same for b in same for m in ("F1c", "F1e"))
    vs_hf = med["hf_trainer"] / med["ner_lit"]
    return {
        "seconds": med,
        "ner_lit_loop_s": common.median([x["loop_s"] for x in rounds["ner_lit"]]),
        "metric_s": {k: common.median([x["metric_s"] for x in rounds[k]]) for k in ("original", "hf_trainer")},
        "rounds": rounds,
        "f1": f1,
        "f1_max_difference": spread,
        "speedup": {"vs_hf_trainer": vs_hf, "vs_original": med["original"] / med["ner_lit"]},
        "targets": {
            "seconds": {"target": f"< {TARGET_SECONDS} s", "value": med["ner_lit"], "met": med["ner_lit"] < TARGET_SECONDS},
            "vs_hf_trainer": {"target": f">= {TARGET_VS_HF}x", "value": vs_hf, "met": vs_hf >= TARGET_VS_HF},
            "same_f1": {"target": "ner_lit (argmax decoding), original, HF equal (<= 0.01)", "value": spread, "met": spread <= 0.01},
        },
    }


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--weights", type=Path, default=None, help="HF model directory (default: accuracy.py's export)")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 1
    common.quiet()
    from ner_lit.corpus.klue import read_klue_tsv

    record = common.start_record("eval_speed", args)
    tok_dir = common.reference_model(args)
    weights = args.weights or common.trained_weights(args) or tok_dir
    labels = common.labels_of(weights)
    sentences = read_klue_tsv(common.data_dir(args) / "dev.tsv")
    rounds = measure(args, weights, tok_dir, labels, sentences)
    record["setting"] = {"sentences": len(sentences), "weights": common.rel(weights), "trained_weights": weights != tok_dir,
                         "eval_batch": 64, "rounds": args.rounds, "precision": "fp32"}
    record.update(figures(rounds))
    common.write_record(record, args)


if __name__ == "__main__":
    main()
