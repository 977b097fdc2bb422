"""int8 against float on a trained checkpoint: F1 on KLUE dev, latency, throughput, memory and bytes.

Each variant is served as ``serve`` would serve it, in a child process of its own (so no
variant's model, threads or allocator state carries over): ``Predictor.from_checkpoint``, then
the float ONNX Runtime graph packed (``float``), int8 weights by ONNX Runtime's
``quantize_dynamic`` under one recipe (``Predictor.quantize``, its answer check measured but not
allowed to refuse), or torch's own dynamic quantization of the eager model's Linear layers
(``torch-int8``, for comparison). Per variant:

* dev F1c / F1e (official, non-space characters) of every dev sentence predicted in one call,
  and how many entities differ from the float variant's;
* the start-up answer check's figures (what ``serve --quantize int8`` decides on);
* p50 / p90 of one-sentence ``predict`` calls over the first ``--latency`` dev sentences after
  10 warm-up calls, and sentences/s of the whole dev set (batches of 64, packed);
* resident memory after (VmRSS) and its peak, the graph's bytes, start-up seconds.

Latency is measured again in a second pass over the variants in reverse order (``--rounds``), so
drift of a shared machine shows up as a difference between passes; the table takes the median.

    python bench/quantize.py --ckpt runs/me5/version_0/checkpoints/best.ckpt   # see bench/README.md
    python bench/quantize.py --quick   # the tiny random test model on 32 sentences; figures mean nothing

Results: bench/results/quantize.json and quantize.md (``--quick``: bench/work/quick-results).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import common  # noqa: E402

#: The variants measured, by name: None is float; a dict is an Int8Recipe's fields; "torch" is torch's own.
VARIANTS: dict[str, Any] = {
    "float": None,
    "int8": "int8",  # serve --quantize int8 (ner_lit.inference.quantization.INT8): feed-forward outputs in float
    "int8-small": "int8-small",  # serve --quantize int8-small: the word embeddings in int8 too
    "int8-all-matmuls": {},
    "int8-per-tensor": {"per_channel": False},
    "uint8": {"weights": "uint8", "keep_float": [r"layer\.\d+/output/dense"]},  # int8 as CPUs without VNNI get it
    "int8-keep-classifier": {"keep_float": ["classifier"]},
    "int8-keep-last-layer": {"keep_float": ["classifier", r"layer\.11/"]},
    "int8-reduce-range": {"reduce_range": True},
    "torch-int8": "torch",
}
WARMUP = 10


def graph_bytes(graph: Path) -> int:
    """A kept graph's bytes, with its lookup tables kept beside it (``<key>.data``)."""
    data = graph.with_suffix(".data")
    return graph.stat().st_size + (data.stat().st_size if data.exists() else 0)


def variant_child(settings_file: Path) -> None:
    """In the child: one variant served and measured; the record to the settings' ``out``."""
    import torch

    from ner_lit.corpus.klue import read_klue_tsv
    from ner_lit.inference.choice import prepare_runtime
    from ner_lit.inference.predictor import Predictor
    from ner_lit.inference.quantization import RECIPES, Int8Recipe, check_texts, compare_answers
    from ner_lit.memory import release_freed_memory

    common.quiet()
    s = json.loads(settings_file.read_text(encoding="utf-8"))
    torch.set_num_threads(s["threads"])
    spec = VARIANTS[s["variant"]]
    cache = Path(s["cache"])
    t0 = time.perf_counter()
    predictor = Predictor.from_checkpoint(s["checkpoint"]) if s["checkpoint"] else Predictor.from_pretrained(s["model_dir"])
    predictor.runtime_cache = cache
    check = None
    if spec == "torch":
        want = predictor.predict(check_texts())
        predictor.runner.model = torch.ao.quantization.quantize_dynamic(predictor.model, {torch.nn.Linear}, dtype=torch.qint8)
        check = compare_answers(want, predictor.predict(check_texts()))
    elif spec is None:
        prepare_runtime(predictor, "onnxruntime", pack=True)
    else:
        recipe = RECIPES[spec] if isinstance(spec, str) else Int8Recipe(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
        assert predictor.quantize(pack=True, recipe=recipe, tolerance=1.0), predictor.runtime
        predictor.release_tokenizer()
        check = predictor.quantization
    release_freed_memory()
    start_s = time.perf_counter() - t0
    texts = [x.text for x in read_klue_tsv(Path(s["dev"]))][: s["sentences"]]
    predict_s, predictions = common.timed(lambda: predictor.predict(texts))
    latencies = []
    for _ in range(s["rounds"]):
        latencies.append(common.one_sentence_latencies(predictor, texts, WARMUP, s["latency"]))
    graphs = sorted(cache.glob("*.onnx"), key=lambda p: p.stat().st_mtime)
    common.write_json(Path(s["out"]), {
        "variant": s["variant"], "runtime": str(predictor.runtime), "packing": str(predictor.packing),
        "start_s": start_s, "dev_predict_s": predict_s, "sentences_per_s": len(texts) / predict_s,
        "latency_ms": latencies, "check": None if check is None else
        {"entities": check.entities, "differ": check.differ, "allowed": check.allowed},
        "graph_bytes": graph_bytes(graphs[-1]) if graphs else None,
        "rss_bytes": common.rss_bytes("VmRSS"), "peak_rss_bytes": common.rss_bytes("VmHWM"),
        "entities": [[[e.start, e.end, e.label] for e in p.entities] for p in predictions],
    })


def scores(labels: list[str], texts: list[str], gold, entities) -> dict[str, float]:
    from bench.boundaries_designs import score, tags_of

    label2id = {lab: i for i, lab in enumerate(labels)}
    pred = [tags_of(t, [tuple(e) for e in ents], label2id) for t, ents in zip(texts, entities)]
    got = score(labels, texts, pred, gold)
    return {"F1c": got["F1c"], "F1e": got["F1e"]}


def measure(args, work: Path, variant: str, checkpoint: Optional[Path], model_dir: Optional[Path],
            dev: Path) -> dict[str, Any]:
    settings = {"variant": variant, "checkpoint": str(checkpoint) if checkpoint else None,
                "model_dir": str(model_dir) if model_dir else None, "dev": str(dev), "threads": args.threads,
                "cache": str(work / "cache" / variant), "sentences": args.sentences, "latency": args.latency,
                "rounds": 1, "out": str(work / f"{variant}.json")}
    common.write_json(work / f"{variant}-settings.json", settings)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_variant", str(work / f"{variant}-settings.json")]
    run = common.run_child(cmd, work / "logs" / f"{variant}.log")
    result = json.loads(Path(settings["out"]).read_text(encoding="utf-8"))
    result["process"] = run
    return result


def markdown(rec: dict[str, Any]) -> str:
    m = rec["machine"]
    lines = [
        "# int8 against float (`bench/quantize.py`)", "",
        f"Checkpoint `{rec['checkpoint']}`; KLUE dev, {rec['sentences']} sentences; {rec['threads']} threads;",
        f"{m.get('cpu', '?')} ({', '.join(f for f in m.get('isa', []) if 'vnni' in f or 'bf16' in f or f == 'avx2')});",
        f"{rec['date']}, load average {rec['load_before']} before, {rec['load_after']} after. Latency: one sentence per",
        "`predict` call, median of the rounds' p50s (each round a pass over the variants, the second in reverse",
        "order). Generated; the notes are in quantize_notes.md.", "",
        "| variant | dev F1c | dev F1e | entities unlike float | check (differ / of) | p50 ms | p50 vs float "
        "| sentences/s | RSS MiB | peak MiB | graph MB | start s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = rec["variants"]["float"]["p50_ms"]
    for name, v in rec["variants"].items():
        check = "-" if v["check"] is None else "{differ} / {entities}".format(**v["check"])
        graph = "-" if v["graph_bytes"] is None else f"{v['graph_bytes'] / 1e6:,.0f}"
        lines.append(
            f"| {name} | {v['F1c']:.2f} | {v['F1e']:.2f} | {v['unlike_float']} | {check} | {v['p50_ms']:.1f} | "
            f"{v['p50_ms'] / base:.2f}x | {v['sentences_per_s']:.1f} | {v['rss_bytes'] / 2**20:,.0f} | "
            f"{v['peak_rss_bytes'] / 2**20:,.0f} | {graph} | {v['start_s']:.1f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = common.parser(__doc__.split("\n")[0])
    ap.add_argument("--ckpt", type=Path, help="the trained checkpoint (a configs/me5.yaml run's best.ckpt)")
    ap.add_argument("--variants", nargs="+", default=["float", "int8", "int8-small", "int8-all-matmuls", "uint8"],
                    choices=list(VARIANTS))
    ap.add_argument("--sentences", type=int, default=5000, help="dev sentences scored (default: all)")
    ap.add_argument("--latency", type=int, default=300, help="dev sentences timed one per call")
    ap.add_argument("--rounds", type=int, default=2, help="latency passes over the variants")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--_variant", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    if args._variant:
        return variant_child(args._variant)
    work = common.WORK / ("quantize-quick" if args.quick else "quantize")
    work.mkdir(parents=True, exist_ok=True)
    model_dir = None
    if args.quick:
        sys.path.insert(0, str(REPO / "tests"))
        from serve_fixtures import build_tiny_model_dir

        model_dir = build_tiny_model_dir(work / "tiny-model")
        args.sentences, args.latency = 32, 8
    elif args.ckpt is None or not args.ckpt.is_file():
        raise SystemExit(f"--ckpt: a trained checkpoint is needed (got {args.ckpt})")
    from ner_lit.corpus.klue import read_klue_tsv

    dev = common.klue_dir(args) / "dev.tsv"
    gold_sents = read_klue_tsv(dev)[: args.sentences]
    record = common.start_record("quantize", args)
    record.update(checkpoint=common.rel(args.ckpt) if args.ckpt else "tiny random test model", sentences=len(gold_sents),
                  threads=args.threads, load_before=common.load_average())
    variants = ["float", *[v for v in args.variants if v != "float"]]
    results = {v: measure(args, work, v, args.ckpt, model_dir, dev) for v in variants}
    for extra in range(1, args.rounds):  # more latency passes, the order reversed each time
        for v in (variants[::-1] if extra % 2 else variants):
            again = measure(argparse.Namespace(**{**vars(args), "sentences": args.latency}), work / "again", v,
                            args.ckpt, model_dir, dev)
            results[v]["latency_ms"].extend(again["latency_ms"])
    labels = labels_of(args.ckpt, model_dir)
    texts = [s.text for s in gold_sents]
    label2id = {lab: i for i, lab in enumerate(labels)}
    gold = [np.asarray([label2id[t] for t in s.tags], dtype=np.int64) for s in gold_sents]
    base = {(i, *map(str, e)) for i, ents in enumerate(results["float"]["entities"]) for e in ents}
    record["variants"] = {}
    for v, r in results.items():
        mine = {(i, *map(str, e)) for i, ents in enumerate(r.pop("entities")) for e in ents}
        r.update(scores(labels, texts, gold, [[tuple(e) for e in ents] for ents in _entities(work, v)]))
        r["unlike_float"] = len(mine ^ base)
        rounds = r["latency_ms"]
        r["p50_ms"] = float(np.median([np.median(x) for x in rounds]))
        r["p50_per_round_ms"] = [float(np.median(x)) for x in rounds]
        r["p90_ms"] = float(np.median([np.percentile(x, 90) for x in rounds]))
        r.pop("latency_ms")
        record["variants"][v] = r
    record["load_after"] = common.load_average()
    common.write_record(record, args)
    out = common.results_dir(args) / "quantize.md"
    common.write_text(out, markdown(record))
    print(markdown(record))


def _entities(work: Path, variant: str) -> list:
    return json.loads((work / f"{variant}.json").read_text(encoding="utf-8"))["entities"]


def labels_of(checkpoint: Optional[Path], model_dir: Optional[Path]) -> list[str]:
    if model_dir is not None:
        return common.labels_of(model_dir)
    from ner_lit.checkpoint.format import load_checkpoint
    from ner_lit.checkpoint.spec import SECTION, TaggerSpec

    return list(TaggerSpec.from_dict(load_checkpoint(checkpoint, verify=False)[SECTION], str(checkpoint)).labels)


if __name__ == "__main__":
    main()
