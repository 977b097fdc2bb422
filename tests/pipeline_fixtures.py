"""Shared helpers for the pipeline and CLI tests (test_pipeline*.py, test_cli*.py, test_model.py).

One tiny model is trained once per session (:func:`trained_run`, about 10 s): a 1-layer,
64-wide BERT with a syllable tokenizer, one epoch on the sample training set, validated on
21 sample dev sentences. Its windows are 32 tokens with a 12-token stride, so the longer
dev sentences are split into several windows and merged again. The tests reuse its run
directory read-only; a test that writes runs copies it (:func:`copy_run`) or uses a root
of its own.

In-process runs go through :func:`cli`, which points ``NER_LIT_CACHE`` at the session's
cache and undoes the process-wide settings a run leaves behind (seed variables, torch's
deterministic mode). New processes go through :func:`cli_process`.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytest
import torch
import yaml

from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "ner_lit" / "sample"

#: Dev sentences the tiny run is validated on: odd, so two ranks never get equal shares.
DEV_SENTENCES = 21
EVAL_BATCH_SIZE = 4  # windows per evaluation batch: 7 batches of the 21 dev sentences, 4 and 3 per rank
MAX_LENGTH = 32
STRIDE = 20  # over max_length // 2 on purpose: every path must window exactly like training


def write_corpus_dir(target: Path) -> Path:
    """train.tsv (the 400 sample training sentences) and dev.tsv (the first 21 sample dev sentences)."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SAMPLE / "train.tsv", target / "train.tsv")
    write_klue_tsv(read_klue_tsv(SAMPLE / "dev.tsv")[:DEV_SENTENCES], target / "dev.tsv")
    return target


def tiny_config(data_dir: Path, root: Path) -> dict:
    return {
        "seed_everything": 7,
        "trainer": {
            "default_root_dir": str(root),
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 1,
            "log_every_n_steps": 5,
            "deterministic": True,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        "model": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "learning_rate": 5.0e-3, "warmup_ratio": 0.1},
        "data": {
            "data_dir": str(data_dir),
            "train_file": "train.tsv",
            "val_file": "dev.tsv",
            "scratch_tokenizer": "syllable",
            "max_length": MAX_LENGTH,
            "stride": STRIDE,
            "batch_size": 16,
            "eval_batch_size": EVAL_BATCH_SIZE,
        },
    }


def short_fit_config(data_dir: Path, folder: Path, epochs: int, batches: int) -> Path:
    """A tiny config file in ``folder`` whose runs go to ``folder/runs``: ``epochs`` of ``batches`` batches."""
    config = tiny_config(data_dir, folder / "runs")
    config["trainer"].update({"max_epochs": epochs, "limit_train_batches": batches})
    path = folder / "fit.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- running the CLI
def cli(args: Sequence[str], cache: Path) -> None:
    """``python -m ner_lit ARGS`` in this process, with the process-wide side effects undone after."""
    from ner_lit.cli.lightning import main

    deterministic = torch.are_deterministic_algorithms_enabled()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NER_LIT_CACHE", str(cache))
        mp.setattr(sys, "argv", [sys.executable, "-m", "ner_lit", *args])  # not pytest's own arguments
        for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG", "NER_LIT_RUN_VERSION"):
            mp.delenv(name, raising=False)  # recorded, so that the values a run sets are removed after it
        try:
            main(list(args))
        finally:
            torch.use_deterministic_algorithms(deterministic)


@dataclass
class Outcome:
    """What a command left: its exit status and what it wrote to stdout and stderr."""

    returncode: int
    stdout: str
    stderr: str


def in_this_process(args: Sequence[str], cache: Path) -> Outcome:
    """``python -m ner_lit ARGS`` through :func:`cli`, its exit status and output captured. An
    exception other than ``SystemExit`` escapes (in a new process it would be a traceback)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli(args, cache)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())


def cli_env(cache: Path) -> dict[str, str]:
    """The environment a new ``ner_lit`` process runs in: offline, with the session's cache, no inherited run state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PL_", "NER_LIT_"))}
    env.update({"NER_LIT_CACHE": str(cache), "PYTHONUNBUFFERED": "1", "GLOO_SOCKET_IFNAME": "lo",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return env


def start_cli_process(args: Sequence[str], cache: Path) -> subprocess.Popen:
    """Start ``python -m ner_lit ARGS`` in a new process, offline, with stdout and stderr piped as text."""
    return subprocess.Popen([sys.executable, "-m", "ner_lit", *args], cwd=REPO, env=cli_env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} ran over {timeout} s:\n{err[-4000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def cli_process(args: Sequence[str], cache: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m ner_lit ARGS`` in a new process (stdout and stderr captured as text)."""
    return finish(start_cli_process(args, cache), timeout)


# --------------------------------------------------------------------------- reading runs
def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def last_value(run_dir: Path, key: str) -> str:
    """The last logged value of ``key`` in a run's metrics.csv, as written (every digit)."""
    values = [row[key] for row in read_metrics(run_dir) if row.get(key)]
    assert values, f"{run_dir / 'metrics.csv'} has no {key}"
    return values[-1]


def versions(root: Path) -> list[Path]:
    from ner_lit.checkpoint.runs import run_dirs

    return run_dirs(root)


def copy_run(run_dir: Path, root: Path) -> Path:
    """A copy of a run directory as ``root/<same version>`` (the original is shared: never write into it)."""
    target = root / run_dir.name
    shutil.copytree(run_dir, target)
    return target


@dataclass(frozen=True)
class TrainedRun:
    data_dir: Path
    cache: Path
    source_config: Path  # the config the run was started with (tiny_config)
    root: Path  # trainer.default_root_dir of the run
    run_dir: Path  # root / version_0
    config: Path  # the resolved config the run saved
    best: Path
    last: Path

    def args(self, *extra: str) -> list[str]:
        """``--config <the saved config>`` plus ``extra``."""
        return ["--config", str(self.config), *extra]


_TRAINED: dict[str, TrainedRun] = {}


def trained_run_once(factory: pytest.TempPathFactory, kind: str = "run") -> TrainedRun:
    """Train the session's tiny model the first time it is asked for, and reuse it after.

    ``kind="token"``: the same with ``--data.tagging token`` on a small WordPiece vocabulary
    (tokens of several characters), a tagger as ner_lit trained them before character tagging.
    """
    if kind not in _TRAINED:
        base = factory.mktemp("trained" if kind == "run" else f"trained-{kind}")
        data_dir = write_corpus_dir(base / "data")
        cache = base / "cache"
        root = base / "runs"
        config = base / "tiny.yaml"
        settings = tiny_config(data_dir, root)
        if kind == "token":
            settings["data"].update(scratch_tokenizer="wordpiece", scratch_vocab_size=300, tagging="token")
        config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        cli(["fit", "--config", str(config)], cache)
        run_dir = root / "version_0"
        best = [p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
        assert len(best) == 1, best
        _TRAINED[kind] = TrainedRun(data_dir, cache, config, root, run_dir, run_dir / "config.yaml", best[0],
                                    run_dir / "checkpoints" / "last.ckpt")
    return _TRAINED[kind]
