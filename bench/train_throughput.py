"""Training throughput (sentences/s) of ner_lit vs the original way (a) vs HF Trainer (b), same run.

Each round trains every system afresh for ``warmup + window`` optimizer steps on the same
model and data; the clock runs from the end of step ``warmup`` to the end of the last step
(data loading, forward, backward, optimizer step; no evaluation, no setup). Rounds are
interleaved (ner_lit, a, b, ner_lit, a, b, ...) so that machine load hits all three alike,
and each round uses another seed (another sample of batches). Figures: median over rounds.

    python bench/train_throughput.py [--rounds 3] [--window 80] [--quick]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

TARGETS = {"vs_original": 4.0, "vs_hf_trainer": 1.5}


def measure(args, model_dir: Path) -> tuple[dict[str, list[dict]], int]:
    """Every system trained afresh per round, rounds interleaved, each round another seed: the rounds'
    clock windows per system, and the number of training windows."""
    from bench import systems

    dm = systems.prepared_data(args, model_dir)  # encodes once (cached); the systems share the windows
    rounds: dict[str, list[dict]] = {"ner_lit": [], "original": [], "hf_trainer": []}
    steps = args.warmup + args.window
    for r in range(args.rounds):
        seed = common.SEED + r
        clock = systems.Clock()
        systems.ner_lit_train(args, model_dir, steps, clock, seed=seed)
        rounds["ner_lit"].append(clock.window(args.warmup))
        clock = systems.Clock()
        systems.original_train(args, model_dir, steps, clock, dm=dm, seed=seed)
        rounds["original"].append(clock.window(args.warmup))
        clock = systems.Clock()
        systems.hf_train(args, model_dir, steps, clock, dm=dm, seed=seed)
        rounds["hf_trainer"].append(clock.window(args.warmup))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]['sentences_per_s']:.1f}/s" for k, v in rounds.items()), flush=True)
    return rounds, len(dm.train_windows)


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=8, help="untimed steps per system and round")
    ap.add_argument("--window", type=int, default=40, help="timed steps per system and round (157 = one epoch)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.window = 1, 1, 2
    common.quiet()
    record = common.start_record("train_throughput", args)
    rounds, train_windows = measure(args, common.reference_model(args))
    med = {k: common.median([x["sentences_per_s"] for x in v]) for k, v in rounds.items()}
    ratios = {"vs_original": med["ner_lit"] / med["original"], "vs_hf_trainer": med["ner_lit"] / med["hf_trainer"]}
    # the ratio within each round (the three measured back to back) is less exposed to load swings
    per_round = {k: [n["sentences_per_s"] / o["sentences_per_s"] for n, o in zip(rounds["ner_lit"], rounds[other])]
                 for k, other in (("vs_original", "original"), ("vs_hf_trainer", "hf_trainer"))}
    record.update({
        "setting": {"batch_size": common.BATCH_SIZE, "lr": common.LEARNING_RATE, "max_length": common.MAX_LENGTH,
                    "precision": "fp32", "rounds": args.rounds, "warmup_steps": args.warmup, "timed_steps": args.window,
                    "train_sentences": train_windows},
        "sentences_per_s": med,
        "rounds": rounds,
        "padded_tokens_per_sentence": {k: common.median([x["padded_tokens_per_sentence"] for x in v]) for k, v in rounds.items()},
        "speedup": ratios,
        "speedup_per_round": per_round,
        "speedup_median_of_rounds": {k: common.median(v) for k, v in per_round.items()},
        "targets": {k: {"target": f">= {t}x", "value": ratios[k], "met": ratios[k] >= t} for k, t in TARGETS.items()},
    })
    common.write_record(record, args)


if __name__ == "__main__":
    main()
