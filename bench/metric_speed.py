"""Metric speed: ner_lit's CharMacroF1 + EntityMacroF1 (update + compute) vs scikit-learn + seqeval.

Inputs: the 5,000 dev sentences' gold character tags (whitespace removed, as KLUE scores)
and a seeded corruption of them as predictions (each character replaced by a random label
with probability 0.1, plus whole entities shifted or retyped), so that every code path of
both metrics is exercised. Each side gets its natural input, prepared outside the clock:
label-id tensors per sentence for ner_lit, a flat id list (sklearn) and per-sentence string
lists (seqeval) for the reference. Repeats are interleaved; figures are medians.
ner_lit is timed with torch's default intra-op threads (the evaluation loop's setting) and
with one thread: its many small tensor ops pay a thread wake-up each, which on a loaded
2-core machine costs more than the work.

    python bench/metric_speed.py [--repeats 5] [--quick]
"""
from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

TARGET_SPEEDUP = 20.0


def corrupt(gold: list[list[int]], n_labels: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    out = []
    for s in gold:
        p = list(s)
        for i in range(len(p)):
            r = rng.random()
            if r < 0.10:
                p[i] = rng.randrange(n_labels)
            elif r < 0.13 and i + 1 < len(p):  # shift a boundary
                p[i], p[i + 1] = p[i + 1], p[i]
        out.append(p)
    return out


def ner_lit_scores(labels: list[str], pred, gold, batch: int) -> tuple[float, float]:
    """ner_lit's CharMacroF1 + EntityMacroF1 over label-id tensors, ``batch`` sentences per update."""
    from ner_lit.training.metrics import CharMacroF1, EntityMacroF1

    f1c, f1e = CharMacroF1(labels), EntityMacroF1(labels)
    for lo in range(0, len(gold), batch):
        f1c.update(pred[lo:lo + batch], gold[lo:lo + batch])
        f1e.update(pred[lo:lo + batch], gold[lo:lo + batch])
    return float(f1c.compute()), float(f1e.compute())


def one_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with torch limited to one intra-op thread."""
    import torch

    def run():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(n)
    return run


def inputs(args) -> dict[str, Any]:
    """Gold and corrupted predictions of dev, in each side's natural form (prepared outside the clock)."""
    import torch

    from ner_lit.corpus.klue import read_klue_tsv
    from ner_lit.corpus.records import derive_labels

    d = common.data_dir(args)
    labels = derive_labels(read_klue_tsv(d / "train.tsv"))
    index = {t: i for i, t in enumerate(labels)}
    dev = read_klue_tsv(d / "dev.tsv")
    gold_ids = [[index[t] for c, t in zip(s.text, s.tags) if not c.isspace()] for s in dev]
    pred_ids = corrupt(gold_ids, len(labels), common.SEED)
    return {"labels": labels, "sentences": len(dev), "characters": sum(map(len, gold_ids)),
            "gold_t": [torch.tensor(g, dtype=torch.long) for g in gold_ids],
            "pred_t": [torch.tensor(p, dtype=torch.long) for p in pred_ids],
            "gold_s": [[labels[i] for i in g] for g in gold_ids], "pred_s": [[labels[i] for i in p] for p in pred_ids]}


def run_all(x: dict[str, Any], batch: int, repeats: int) -> tuple[dict[str, list[float]], dict[str, tuple[float, float]]]:
    """Every variant ``repeats`` times, interleaved: the times and the values of each."""
    labels = x["labels"]
    variants: dict[str, Callable[[], tuple[float, float]]] = {
        "ner_lit_batched": lambda: ner_lit_scores(labels, x["pred_t"], x["gold_t"], batch),
        "ner_lit_one_update": lambda: ner_lit_scores(labels, x["pred_t"], x["gold_t"], len(x["gold_t"])),
        "ner_lit_batched_1thread": one_thread(lambda: ner_lit_scores(labels, x["pred_t"], x["gold_t"], batch)),
        "sklearn_seqeval": lambda: common.sklearn_seqeval(x["gold_s"], x["pred_s"], labels),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    values: dict[str, tuple[float, float]] = {}
    variants["ner_lit_batched"]()  # warm-up (first-call overheads of torch ops)
    for _ in range(repeats):
        for name, fn in variants.items():
            t, values[name] = common.timed(fn)
            times[name].append(t)
    return times, values


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64, help="sentences per update() in the batched variant")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 2
    common.quiet()
    record = common.start_record("metric_speed", args)
    x = inputs(args)
    times, values = run_all(x, args.batch, args.repeats)
    med = {k: common.median(v) for k, v in times.items()}
    ref = values["sklearn_seqeval"]
    diff = max(abs(a - b) for k in ("ner_lit_batched", "ner_lit_one_update", "ner_lit_batched_1thread") for a, b in zip(values[k], ref))
    speedup = med["sklearn_seqeval"] / med["ner_lit_batched"]
    record.update({
        "setting": {"sentences": x["sentences"], "characters": x["characters"], "labels": len(x["labels"]),
                    "corruption": "p=0.10 random label, p=0.03 swap with next char; seed 7", "repeats": args.repeats,
                    "batched_update_sentences": args.batch},
        "seconds": med,
        "all_seconds": times,
        "values": {k: {"F1c": v[0], "F1e": v[1]} for k, v in values.items()},
        "max_abs_difference": diff,
        "speedup": {"batched": speedup, "one_update": med["sklearn_seqeval"] / med["ner_lit_one_update"],
                    "batched_1thread": med["sklearn_seqeval"] / med["ner_lit_batched_1thread"]},
        "targets": {
            "identical": {"target": "max abs difference <= 1e-9", "value": diff, "met": diff <= 1e-9},
            "speedup": {"target": f">= {TARGET_SPEEDUP}x (batched updates of {args.batch} sentences)", "value": speedup,
                        "met": speedup >= TARGET_SPEEDUP},
        },
    })
    print({k: round(v, 4) for k, v in med.items()}, "speedup", round(speedup, 1), "diff", diff)
    common.write_record(record, args)


if __name__ == "__main__":
    main()
