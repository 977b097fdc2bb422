"""bench/gpu.py, the GPU check, on a machine without a GPU: it imports without torch, its options parse,
``--dry-run`` shows the GPU commands, it stops with exit 2 when no CUDA device is there, and (slow)
``--quick --allow-cpu`` runs fit, test and serve end to end on the CPU and writes its record; and
``--pack`` writes a bundle for the GPU machine whose model is the full one on KLUE's tokens."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu.py"


def run(args: list[str], timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=env)


def no_cuda_env() -> dict[str, str]:
    """The environment with every CUDA device hidden, so that the no-GPU path runs on a GPU machine too."""
    return dict(os.environ, CUDA_VISIBLE_DEVICES="")


def test_imports_without_torch() -> None:
    proc = run(["-c", "import sys; import bench.gpu; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_help() -> None:
    proc = run([str(SCRIPT), "--help"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    for option in ("--allow-cpu", "--dry-run", "--quick", "--results", "--model", "--epochs", "--pack", "--bundle"):
        assert option in proc.stdout, option


def test_dry_run_prints_the_gpu_commands(tmp_path: Path) -> None:
    code = ("import sys; import bench.gpu as g; g.main(sys.argv[1:]); "
            "print('imported torch' if 'torch' in sys.modules else 'no torch')")
    proc = run(["-c", code, "--dry-run", "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    fit = next(line for line in lines if " -m ner_lit fit " in line)
    test = next(line for line in lines if " -m ner_lit test " in line)
    serve = next(line for line in lines if " -m ner_lit serve " in line)
    for cmd in (fit, test):
        assert "--config configs/me5.yaml" in cmd
        assert "--trainer.accelerator gpu --trainer.devices 1 --trainer.precision bf16-mixed" in cmd
        assert "bench.gpu.StageClock" in cmd
    assert "--trainer.max_epochs 1" in fit
    assert "--ckpt_path best --data.test_file dev.tsv" in test
    assert "--device cuda --host 127.0.0.1 --port 0" in serve
    assert lines[-1] == "no torch"  # nothing ran: not even torch was imported
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()


def test_dry_run_with_quick_and_max_steps() -> None:
    proc = run([str(SCRIPT), "--dry-run", "--quick", "--max-steps", "5", "--runtime", "torchscript"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--trainer.max_steps 5" in proc.stdout and "--runtime torchscript" in proc.stdout


def test_without_cuda_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = run([str(SCRIPT), "--results", str(tmp_path)], env=no_cuda_env())
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--allow-cpu" in lines[0], proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_quick_cpu_run_writes_the_record(reference_model: Path, klue_dir: Path, tmp_path: Path) -> None:
    """On the tiny reference model: the script's pipeline end to end. multilingual-e5-small through the
    same commands is tests/pipeline/test_pretrained_pipeline.py's (and the README block's) to check."""
    results, work = tmp_path / "results", tmp_path / "work"
    t0 = time.monotonic()
    proc = run([str(SCRIPT), "--quick", "--allow-cpu", "--model", str(reference_model), "--shared", str(klue_dir.parents[1]),
                "--results", str(results), "--work", str(work)], timeout=600, env=no_cuda_env())
    elapsed = time.monotonic() - t0
    shutil.rmtree(work / "run", ignore_errors=True)  # the checkpoint: about 0.5 GB
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((results / "gpu.json").read_text(encoding="utf-8"))
    assert record["name"] == "gpu" and record["quick"] is True
    assert record["device"]["type"] == "cpu" and record["device"]["name"] and record["device"]["torch"]
    assert record["machine"]["cpu_flags"] and record["machine"]["cores"] >= 1
    s = record["summary"]
    assert s["device"] == record["device"]["name"]
    assert s["train_sentences_per_s"] > 0 and record["fit"]["clock"]["steps"] >= 1
    assert 0 <= s["F1c"] <= 100 and 0 <= s["F1e"] <= 100
    assert s["test_sentences_per_s"] > 0 and s["test_wall_s"] > 0
    assert s["serve_p50_ms"] > 0 and record["serve"]["requests"] == record["serve"]["sentences"] > 0
    assert record["serve"]["errors"] == 0 and "cpu" in record["serve"]["banner_device"]
    assert record["setting"]["precision"] in ("bf16-mixed", "32-true")
    print(f"bench/gpu.py --quick --allow-cpu: {elapsed:.1f} s")


@pytest.mark.slow
def test_pack_bundle_holds_the_model_on_klue_tokens(pretrained_me5: Path, klue_dir: Path, tmp_path: Path) -> None:
    """--pack's bundle fits what the device tool carries, and the model built from it on the GPU
    machine is the full model wherever KLUE's tokens look (the other word-embedding rows are zeros)."""
    import numpy as np
    from conftest import PRETRAINED_ME5_CACHE
    from safetensors.numpy import load_file

    bundle = tmp_path / "bundle"
    proc = run([str(SCRIPT), "--pack", str(bundle), "--shared", str(klue_dir.parents[1]), "--cache", str(PRETRAINED_ME5_CACHE)],
               timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert size < 48 * 2**20, size  # the working tree travels beside it within 64 MiB
    assert (bundle / "data" / "klue-ner" / "dev.tsv").is_file() and (bundle / "site" / "jsonargparse").is_dir()
    sys.path.insert(0, str(REPO))
    try:
        from bench.gpu import build_from_bundle
    finally:
        sys.path.remove(str(REPO))
    built = build_from_bundle(bundle, tmp_path / "me5-klue")
    full, pruned = load_file(str(pretrained_me5 / "model.safetensors")), load_file(str(built / "model.safetensors"))
    word = "bert.embeddings.word_embeddings.weight"
    assert full.keys() == pruned.keys()
    assert all(np.array_equal(full[k], pruned[k]) for k in full if k != word)
    kept = np.abs(pruned[word]).sum(axis=1) > 0
    manifest = json.loads((bundle / "me5" / "manifest.json").read_text())
    assert 6000 < kept.sum() <= manifest["kept_rows"] and np.array_equal(full[word][kept], pruned[word][kept])
    assert (built / "tokenizer.json").read_bytes() == (pretrained_me5 / "tokenizer.json").read_bytes()
    shutil.rmtree(built)  # about 0.5 GB
