"""Serve latency of token vs character tagging, interleaved, on the checkpoints bench/boundaries.py trained.

bench/boundaries.py times each run's serving in its own child, one after the other, so the
host's drift between the two lands in their ratio. Here both taggers of a model are loaded
into one process and timed in alternating rounds: one sentence per ``Predictor.predict`` call
over the first ``--sentences`` dev sentences, one torch thread, after 10 warm-up calls each;
the median over all rounds. Run bench/boundaries.py first (its best checkpoints under
bench/work/boundaries/<model>-<tagging>/).

    python bench/boundaries_serve.py [--rounds 3] [--sentences 200]
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

TAGGINGS = ("token", "char")
MODELS = ("reference", "me5")
WARMUP_CALLS = 10


def best_checkpoint(model: str, tagging: str) -> Path:
    from ner_lit.checkpoint.runs import resolve_checkpoint

    root = common.WORK / "boundaries" / f"{model}-{tagging}"
    if not root.is_dir():
        sys.exit(f"{root} not found: run bench/boundaries.py first")
    return resolve_checkpoint("best", root)


def p50_per_tagging(model: str, texts: list[str], rounds: int) -> dict[str, float]:
    """Both taggers of ``model`` loaded side by side and timed in alternating rounds, one sentence per
    ``predict`` call: the median milliseconds of each."""
    from ner_lit.inference.predictor import Predictor

    taggers = {t: Predictor.from_checkpoint(best_checkpoint(model, t)) for t in TAGGINGS}
    for tagger in taggers.values():
        for text in texts[:WARMUP_CALLS]:
            tagger.predict([text])
    latencies: dict[str, list[float]] = {t: [] for t in TAGGINGS}
    for _ in range(rounds):
        for t, tagger in taggers.items():
            for text in texts:
                t0 = time.perf_counter()
                tagger.predict([text])
                latencies[t].append((time.perf_counter() - t0) * 1000)
    return {t: statistics.median(v) for t, v in latencies.items()}


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per model (default 3)")
    ap.add_argument("--sentences", type=int, default=200, help="dev sentences per round (default 200)")
    args = ap.parse_args()
    import torch

    common.quiet()
    torch.set_num_threads(1)
    record = common.start_record("boundaries_serve", args)
    texts = common.dev_texts(args, args.sentences)
    record["setting"] = {"rounds": args.rounds, "sentences": len(texts), "torch_threads": 1, "warmup_calls": WARMUP_CALLS}
    record["models"] = {}
    for model in MODELS:
        p50 = p50_per_tagging(model, texts, args.rounds)
        record["models"][model] = {"checkpoints": {t: common.rel(best_checkpoint(model, t)) for t in TAGGINGS},
                                   "p50_ms": p50, "char_over_token": p50["char"] / p50["token"]}
        print(f"{model}: p50 token {p50['token']:.2f} ms, char {p50['char']:.2f} ms, char/token {p50['char'] / p50['token']:.3f}",
              flush=True)
    common.write_record(record, args)


if __name__ == "__main__":
    main()
