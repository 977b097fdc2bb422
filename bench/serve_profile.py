"""Where a served request's time goes, and what batching does to the forward pass, in-process.

The model is loaded and made ready as ``serve`` does (ONNX Runtime, packed rows, the torch
thread count of this process), then:

* **stages**: dev sentences one at a time through the stages a request runs (tokenise and
  window, ``Predictor.forward``, answer shaping, JSON), each timed, and the bare runtime call
  inside ``forward`` timed apart; p50 of each.
* **batching**: the same 8 dev sentences packed (several windows to a row), as 8 separate
  calls, and padded (one row each, padded to the longest), interleaved over rounds; medians.

    python bench/serve_profile.py [--model-dir DIR] [--sentences 100] [--rounds 7] [--quick]

``--model-dir`` is an exported ner_lit model (default: the one ``bench/pretrained.py`` trains,
multilingual-e5-small fine-tuned on KLUE); ``--quick`` uses the tiny reference model.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

DEFAULT_MODEL = common.WORK / "pretrained" / "ner_lit" / "version_0" / "hf_model"
BATCH = 8


class Timed:
    """A runtime callable whose calls are timed (the bare forward pass inside ``Predictor.forward``)."""

    def __init__(self, fn, seconds: list[float]) -> None:
        self.fn, self.seconds = fn, seconds

    def __call__(self, *tensors):
        started = time.perf_counter()
        out = self.fn(*tensors)
        self.seconds.append(time.perf_counter() - started)
        return out


def p50_ms(xs: list[float]) -> float:
    return round(1000 * common.median(xs), 2)


def ready_predictor(model_dir: Path, bare: list[float]):
    """The model loaded and made ready as ``serve`` does (ONNX Runtime, packed rows), its bare runtime
    calls timed into ``bare``. Unlike serve's prepare_runtime, the eager model and the padded graph
    are kept: the batching comparison needs the padded runner beside the packed one."""
    from ner_lit.inference.predictor import Predictor
    from ner_lit.serving.launch import choose_runtime

    predictor = Predictor.from_pretrained(model_dir)
    choose_runtime(predictor, "onnxruntime")
    predictor.pack(release=False)
    runner = predictor.runner
    for attr in ("packed", "compiled"):
        if getattr(runner, attr) is not None:
            setattr(runner, attr, Timed(getattr(runner, attr), bare))
    return predictor


def stage_times(predictor, texts: list[str], bare: list[float]) -> dict[str, list[float]]:
    """Seconds of each stage a request runs, per text sent one at a time, and of the bare runtime call."""
    from ner_lit.serving.app import prediction_to_json

    stages: dict[str, list[float]] = {k: [] for k in ("prepare", "forward", "bare_forward", "finish", "json", "total")}
    predictor.predict(texts[:2])  # warm-up: first calls at a shape pay for allocations
    for text in texts:
        bare.clear()
        t0 = time.perf_counter()
        (encoded,) = predictor.prepare([text])
        t1 = time.perf_counter()
        (decoded,) = predictor.forward([encoded])
        t2 = time.perf_counter()
        answer = predictor.finish(text, encoded, decoded)
        t3 = time.perf_counter()
        body = json.dumps(prediction_to_json(answer), ensure_ascii=False)
        t4 = time.perf_counter()
        assert body
        for name, seconds in zip(("prepare", "forward", "finish", "json", "total"),
                                 (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            stages[name].append(seconds)
        stages["bare_forward"].append(sum(bare))
    return stages


def batching(predictor, texts: list[str], rounds: int) -> dict[str, Any]:
    """The same sentences' windows packed, as separate calls and padded, interleaved over ``rounds``."""
    from ner_lit.alignment.collate import pack_windows

    runner = predictor.runner
    windows = [w for e in predictor.prepare(texts) for w in e.windows]
    ways = {
        "packed": lambda: runner.logits(windows, packed=True),
        "separate": lambda: [runner.logits([w]) for w in windows],
        "padded": lambda: runner.logits(windows, packed=False),
    }
    for fn in ways.values():
        fn()  # warm-up
    seconds: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(rounds):
        for name, fn in ways.items():  # interleaved, so drift in the machine's speed hits all three alike
            seconds[name].append(common.timed(fn)[0])
    rows = (len(pack_windows(windows, runner.pad_id, runner.pack_width, runner.first_position).input_ids)
            if runner.packed is not None else None)
    return {"sentences": len(texts), "windows": len(windows), "tokens": sum(len(w.input_ids) for w in windows),
            "packed_rows": rows, "median_ms": {k: p50_ms(v) for k, v in seconds.items()}, "rounds": rounds}


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--model-dir", type=Path, default=None, help=f"an exported ner_lit model (default {DEFAULT_MODEL})")
    ap.add_argument("--sentences", type=int, default=100, help="dev sentences sent one at a time")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the batching comparison")
    args = ap.parse_args()
    if args.quick:
        args.sentences, args.rounds = 8, 2
    common.quiet()
    import torch

    from ner_lit.corpus.klue import read_klue_tsv

    model_dir = args.model_dir or (common.reference_model(args) if args.quick else DEFAULT_MODEL)
    if not (model_dir / "config.json").is_file():
        sys.exit(f"{model_dir}: no exported model there (run bench/pretrained.py first, or pass --model-dir)")
    record = common.start_record("serve_profile", args)
    dev = [s.text for s in read_klue_tsv(common.data_dir(args) / "dev.tsv")]
    bare: list[float] = []
    predictor = ready_predictor(model_dir, bare)
    record.update(model=str(model_dir), runtime=str(predictor.runtime), packing=str(predictor.packing),
                  torch_threads=torch.get_num_threads())
    stages = stage_times(predictor, dev[: args.sentences], bare)
    record["stages_p50_ms"] = {k: p50_ms(v) for k, v in stages.items()}
    record["bare_forward_share_of_forward"] = round(common.median(stages["bare_forward"]) / common.median(stages["forward"]), 3)
    record["batching"] = batching(predictor, dev[:BATCH], args.rounds)
    print(json.dumps({k: record[k] for k in ("runtime", "packing", "stages_p50_ms", "bare_forward_share_of_forward",
                                                "batching")}, indent=2, ensure_ascii=False))
    common.write_record(record, args)


if __name__ == "__main__":
    main()
