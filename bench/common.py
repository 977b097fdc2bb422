"""Shared plumbing of the bench scripts: options, the reference model, data, machine facts, results.

Reference setting (issue 5): this machine's CPU, fp32; the reference tiny model built by
../shared/tools/reference-model/make_tiny_model.py into bench/work/reference-model;
KLUE-NER train.tsv (5,000) -> dev.tsv (5,000); batch 32, lr 5e-4, max_length 128, seed 7.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
WORK = BENCH / "work"
RESULTS = BENCH / "results"

BATCH_SIZE = 32
LEARNING_RATE = 5e-4
MAX_LENGTH = 128
SEED = 7
QUICK_SENTENCES = 96


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared",
                    help="the workplace's shared folder (data/klue-ner, tools/reference-model); default <repo>/../shared")
    ap.add_argument("--quick", action="store_true", help="a few batches on a few sentences (smoke test); figures mean nothing")
    ap.add_argument("--results", type=Path, default=None,
                    help="directory of the result JSON (default bench/results, or bench/work/quick-results with --quick)")
    return ap


def results_dir(args) -> Path:
    d = args.results or (WORK / "quick-results" if args.quick else RESULTS)
    d.mkdir(parents=True, exist_ok=True)
    return d


def klue_dir(args) -> Path:
    d = Path(args.shared) / "data" / "klue-ner"
    if not (d / "train.tsv").is_file():
        sys.exit(f"{d}/train.tsv not found: pass --shared <the workplace's shared folder>")
    return d


def data_dir(args) -> Path:
    """KLUE-NER in place, or (--quick) its first QUICK_SENTENCES sentences of each file under bench/work."""
    src = klue_dir(args)
    if not args.quick:
        return src
    from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv

    out = WORK / "quick-data"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train.tsv", "dev.tsv"):
        if not (out / name).is_file():
            write_klue_tsv(read_klue_tsv(src / name)[:QUICK_SENTENCES], out / name, overwrite=True)
    return out


def reference_model(args) -> Path:
    """bench/work/reference-model, built by the shared tool if missing (about 8 s, byte-identical)."""
    out = WORK / "reference-model"
    if not (out / "config.json").is_file():
        tool = Path(args.shared) / "tools" / "reference-model" / "make_tiny_model.py"
        subprocess.run([sys.executable, str(tool), "--train", str(klue_dir(args) / "train.tsv"), "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def cache_dir() -> Path:
    d = WORK / "cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


def cpu_info() -> tuple[str, list[str]]:
    """The CPU model and the vector/matrix instruction sets that decide fp32/bf16 speed (no torch import)."""
    cpu = "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return cpu, sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))


def machine() -> dict[str, Any]:
    cpu, isa = cpu_info()
    import lightning
    import torch
    import transformers

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "isa": isa,
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lightning": lightning.__version__,
    }


def start_record(name: str, args) -> dict[str, Any]:
    return {
        "name": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1]] + sys.argv),
        "quick": bool(args.quick),
        "machine": machine(),
    }


def write_record(record: dict[str, Any], args) -> Path:
    record["machine"]["load_average_at_end"] = list(os.getloadavg())
    path = results_dir(args) / f"{record['name']}.json"
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def quiet() -> None:
    """Less noise from the libraries on stdout (progress bars, hints)."""
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:
        pass


# --------------------------------------------------------------------- ner_lit building blocks
def make_datamodule(args, model_dir: Path, cls=None, **overrides):
    """The reference setting's data module. Token tagging unless ``tagging`` is given: these benches
    put ner_lit beside systems that label tokens (the original loop, the Hugging Face Trainer) on the
    same windows; bench/boundaries.py is where token and character tagging are compared."""
    from ner_lit.data.datamodule import NERDataModule

    cls = cls or NERDataModule
    kw = dict(data_dir=str(data_dir(args)), tokenizer=str(model_dir), max_length=MAX_LENGTH, batch_size=BATCH_SIZE,
              cache_dir=str(cache_dir()), tagging="token")
    kw.update(overrides)
    return cls(**kw)


def make_model(model_dir: Path, **overrides):
    from ner_lit.training.model import NERModel

    kw = dict(pretrained=str(model_dir), learning_rate=LEARNING_RATE)
    kw.update(overrides)
    return NERModel(**kw)


def pl_trainer(**overrides):
    import lightning.pytorch as pl

    kw = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False)
    kw.update(overrides)
    return pl.Trainer(**kw)


def labels_of(model_dir: Path) -> list[str]:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    id2label = cfg["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]


def sklearn_seqeval(gold_sents: list[list[str]], pred_sents: list[list[str]], labels: list[str]) -> tuple[float, float]:
    """The official KLUE scores (x100): sklearn char macro F1 (13 labels, zero_division=1), seqeval strict IOB2 macro F1."""
    from seqeval.metrics import f1_score as seq_f1
    from seqeval.scheme import IOB2
    from sklearn.metrics import f1_score

    index = {t: i for i, t in enumerate(labels)}
    g = [index[t] for s in gold_sents for t in s]
    p = [index[t] for s in pred_sents for t in s]
    f1c = f1_score(g, p, average="macro", labels=list(range(len(labels))), zero_division=1) * 100
    f1e = seq_f1(gold_sents, pred_sents, average="macro", mode="strict", scheme=IOB2) * 100
    return float(f1c), float(f1e)


def trained_weights(args) -> Optional[Path]:
    """The HF export of bench/accuracy.py's main run (trained weights), if that has run."""
    base = WORK / ("quick-accuracy" if args.quick else "accuracy") / "main"
    found = sorted(base.glob("version_*/hf_model/config.json"))
    return found[-1].parent if found else None


def matmul_gflops(m: int = 2048, k: int = 2048, n: int = 2048, dtype: str = "float32", repeats: int = 10) -> float:
    """This machine's dense matmul rate (GFLOP/s, median of ``repeats`` after a warm-up) for
    ``[m, k] @ [k, n]`` in ``dtype``: the yardstick of the FLOP-rate and precision figures."""
    import torch

    a = torch.randn(m, k, dtype=getattr(torch, dtype))
    b = torch.randn(k, n, dtype=getattr(torch, dtype))
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        rates.append(2 * m * n * k / (time.perf_counter() - t) / 1e9)
    return median(rates)
