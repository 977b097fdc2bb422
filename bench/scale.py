"""``predict`` on large inputs: wall time, sentences/s and peak memory against input size.

Inputs are KLUE dev sentences repeated to N lines (plain text). Each size runs
``python -m ner_lit predict`` once in a child process; its peak RSS is the child's own
(bench/common.py's ``run_child``), its time the child's wall time (start-up included). For each
model one extra short in-process run times the model's forward pass against the whole
predict loop (the forward-pass share).

Models: ``tiny`` is the quickstart checkpoint (``configs/tiny.yaml``, trained into
bench/work/scale on first use), ``reference`` the project's reference model
(../shared/tools/reference-model, 4x256 BERT) used as an untrained Hugging Face directory.

    python bench/scale.py                        # 10k and 100k lines, both models
    python bench/scale.py --sizes 10000 100000 1000000 --models tiny
    python bench/scale.py --reference-sizes 10000  # the reference model at 10k only

Writes bench/results/scale.json and, if matplotlib is importable, bench/results/scale.png.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

SCALE = common.WORK / "scale"
SHARE_SENTENCES = 2000


def child_env(args) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PL_", "NER_LIT_"))}
    if getattr(args, "threads", None):
        env["OMP_NUM_THREADS"] = str(args.threads)  # torch's intra-op threads in the child
    env.update({"NER_LIT_CACHE": str(common.WORK / "cache"), "PYTHONPATH": str(common.REPO), "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1"})
    return env


def tiny_checkpoint(args) -> Path:
    """The quickstart checkpoint (best val_F1c), trained once into bench/work/scale/tiny-run."""
    root = SCALE / "tiny-run"
    found = sorted(root.glob("version_*/checkpoints/epoch*.ckpt"))
    if not found:
        subprocess.run([sys.executable, "-m", "ner_lit", "fit", "--config", "configs/tiny.yaml", "--trainer.default_root_dir",
                        str(root), "--trainer.enable_progress_bar", "false"], cwd=common.REPO, env=child_env(args), check=True,
                       stdout=subprocess.DEVNULL)
        found = sorted(root.glob("version_*/checkpoints/epoch*.ckpt"))
    return found[-1]


def model_args(name: str, args) -> list[str]:
    if name == "tiny":
        ckpt = tiny_checkpoint(args)
        return ["--config", str(ckpt.parents[1] / "config.yaml"), "--ckpt_path", str(ckpt)]
    ref = common.reference_model(args)
    labels = "[" + ",".join(common.REFERENCE_LABELS) + "]"
    return ["--model.pretrained", str(ref), "--data.tokenizer", str(ref), "--data.labels", labels,
            "--data.data_dir", str(common.klue_dir(args)), "--trainer.accelerator", "cpu"]


def input_file(n: int, args) -> Path:
    """``n`` lines: the KLUE dev sentences over and over."""
    path = SCALE / f"dev-{n}.txt"
    if not path.is_file():
        from ner_lit.corpus.klue import read_klue_tsv

        texts = [s.text for s in read_klue_tsv(common.klue_dir(args) / "dev.tsv")]
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for i in range(n):
                f.write(texts[i % len(texts)] + "\n")
        os.replace(tmp, path)
    return path


def predict_command(name: str, source: Path, output: Path, root: Path, args) -> list[str]:
    return [sys.executable, "-m", "ner_lit", "predict", *model_args(name, args), "--data.predict_file", str(source),
            "--prediction_writer.output", str(output), "--prediction_writer.overwrite", "true",
            "--trainer.default_root_dir", str(root), "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]


def run_once(name: str, n: int, args) -> dict[str, Any]:
    """One predict child on n lines: wall time, its own peak RSS, and that every line came out."""
    source = input_file(n, args)
    run = SCALE / "runs" / f"{name}-{n}-{time.time_ns()}"
    output = run / "predictions.jsonl"
    child = common.run_child(predict_command(name, source, output, run, args), run / "predict.log", env=child_env(args))
    with output.open("rb") as f:
        rows = sum(1 for _ in f)
    output.unlink()
    assert rows == n, (rows, n)
    seconds = child["wall_s"]
    result = {"model": name, "lines": n, "seconds": round(seconds, 2), "sentences_per_s": round(n / seconds, 1),
              "peak_rss_mb": round(child["peak_rss_bytes"] / 2**20, 1)}
    print(json.dumps(result), flush=True)
    return result


def forward_share(name: str, args) -> dict[str, Any]:
    """Run predict in a child that times NERModel.forward inside the predict loop (on SHARE_SENTENCES lines)."""
    n = SHARE_SENTENCES if not args.quick else 200
    run = SCALE / "runs" / f"share-{name}-{time.time_ns()}"
    cmd = predict_command(name, input_file(n, args), run / "p.jsonl", run, args)
    code = (
        "import json, sys, time\n"
        "from ner_lit.training.callbacks import PredictionWriter\n"
        "from ner_lit.training.model import NERModel\n"
        "t = {'forward': 0.0}\n"
        "forward, start, end = NERModel.forward, PredictionWriter.on_predict_start, PredictionWriter.on_predict_end\n"
        "def timed(self, *a, **k):\n"
        "    s = time.perf_counter(); out = forward(self, *a, **k); t['forward'] += time.perf_counter() - s; return out\n"
        "def on_start(self, *a):\n"
        "    start(self, *a); t['start'] = time.perf_counter()\n"
        "def on_end(self, *a):\n"
        "    t['loop'] = time.perf_counter() - t['start']; end(self, *a)\n"
        "NERModel.forward, PredictionWriter.on_predict_start, PredictionWriter.on_predict_end = timed, on_start, on_end\n"
        "from ner_lit.cli.lightning import main\n"
        "main(sys.argv[1:])\n"
        "print('SHARE ' + json.dumps(t))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *cmd[3:]], cwd=common.REPO, env=child_env(args), capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("SHARE ")]
    if proc.returncode != 0 or not line:
        sys.exit(f"forward-share run failed:\n{proc.stderr[-3000:]}")
    t = json.loads(line[0][6:])
    result = {"model": name, "lines": n, "predict_loop_s": round(t["loop"], 2), "forward_s": round(t["forward"], 2),
              "forward_share": round(t["forward"] / t["loop"], 3), "loop_sentences_per_s": round(n / t["loop"], 1)}
    print(json.dumps(result), flush=True)
    return result


def plot(runs: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is not installed (pip install matplotlib)")
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for model in sorted({r["model"] for r in runs}):
        rs = sorted((r for r in runs if r["model"] == model), key=lambda r: r["lines"])
        left.plot([r["lines"] for r in rs], [r["seconds"] for r in rs], "o-", label=model)
        right.plot([r["lines"] for r in rs], [r["peak_rss_mb"] for r in rs], "o-", label=model)
    for ax, label in ((left, "wall time (s)"), (right, "peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_xlabel("input lines")
        ax.set_ylabel(label)
        ax.legend()
    right.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
    return True


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="input lines per run")
    ap.add_argument("--models", nargs="+", choices=("tiny", "reference"), default=["tiny", "reference"])
    ap.add_argument("--reference-sizes", type=int, nargs="+", default=None,
                    help="input lines per run of the reference model (default: --sizes); it is several times slower")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of the predict children (OMP_NUM_THREADS); on a machine busy with other jobs "
                         "1 thread avoids the intra-op threads waiting for each other")
    ap.add_argument("--note", default="", help="a remark stored with the results (e.g. what else ran on the machine)")
    args = ap.parse_args()
    sizes = [200, 400] if args.quick else args.sizes
    SCALE.mkdir(parents=True, exist_ok=True)
    record = common.start_record("scale", args)
    record["note"] = args.note
    record["child_torch_threads"] = args.threads or record["machine"]["torch_threads"]
    record["forward_share"] = [forward_share(m, args) for m in args.models]
    per_model = {"tiny": sizes, "reference": sizes if args.quick or not args.reference_sizes else args.reference_sizes}
    record["runs"] = [run_once(m, n, args) for m in args.models for n in per_model[m]]
    record["plot"] = plot(record["runs"], common.results_dir(args) / "scale.png")
    common.write_record(record, args)


if __name__ == "__main__":
    main()
