"""SIGTERM or Ctrl-C during training: the step under way finishes, last.ckpt is written, one line, status 75.

The handler itself is tested here directly; a run stopped in this process by a signal it sends
itself is the end-to-end check of the fast tier (the seeded and external signals, kill -9 after
a mid-epoch save, the resumes' digests and DDP are in tests/pipeline/).
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml

from ner_lit.training.preemption import EXIT_PREEMPTED, Preempted, Preemption

from pipeline_fixtures import TrainedRun, in_this_process, short_fit_config


@pytest.fixture
def installed() -> Iterator[Preemption]:
    """A Preemption callback with its handlers installed, and this process's handlers back after."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    callback = Preemption()
    callback._install()
    yield callback
    callback._restore()
    assert {s: signal.getsignal(s) for s in before} == before


def test_the_first_signal_only_asks_for_a_stop(installed: Preemption) -> None:
    signal.raise_signal(signal.SIGTERM)
    assert installed.received == signal.SIGTERM


def test_a_second_ctrl_c_means_now(installed: Preemption) -> None:
    signal.raise_signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is not installed._handle  # the default is back


def test_the_handlers_are_put_back_when_training_ends() -> None:
    before = signal.getsignal(signal.SIGTERM)
    callback = Preemption()
    callback.on_train_start(None, None)  # type: ignore[arg-type]
    assert signal.getsignal(signal.SIGTERM) == callback._handle
    callback.on_train_end(None, None)  # type: ignore[arg-type]
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_message_says_what_stopped_the_run_and_the_command_that_resumes_it() -> None:
    stop = Preempted("SIGTERM", 3, 1200, "runs/x/version_2/checkpoints/last.ckpt", "runs/x/version_2/config.yaml", 0)
    assert str(stop) == ("stopped by SIGTERM in epoch 3 after step 1200; saved runs/x/version_2/checkpoints/last.ckpt: "
                         "resume with `ner_lit fit --config runs/x/version_2/config.yaml "
                         "--ckpt_path runs/x/version_2/checkpoints/last.ckpt`")
    assert "no checkpoint was written" in str(Preempted("SIGINT", 0, 5, None, None, 0))


# --------------------------------------------------------------------------- a run in this process
@pytest.fixture
def tiny_fit_config(trained_run: TrainedRun, tmp_path: Path) -> Path:
    return short_fit_config(trained_run.data_dir, tmp_path, epochs=2, batches=6)


def signal_at(tmp_path: Path, epoch: int, batch: int, name: str) -> Path:
    path = tmp_path / "signal.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": [{
        "class_path": "fault_plugins.SignalAtBatch",
        "init_args": {"epoch": epoch, "batch": batch, "signal_name": name}}]}}), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_mid_epoch_saves_that_step_and_exits_75(name: str, trained_run: TrainedRun, tiny_fit_config: Path,
                                                         tmp_path: Path) -> None:
    out = in_this_process(["fit", "--config", str(tiny_fit_config), "--config", str(signal_at(tmp_path, 1, 2, name))],
                          trained_run.cache)
    assert out.returncode == EXIT_PREEMPTED, out.stderr[-3000:]
    last = tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"ner_lit: stopped by {name} in epoch 1 after step 9; saved {last}" in out.stderr
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6 + 3  # epoch 0's six steps and the three begun in epoch 1, the last finished
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["position"] == 3
    assert signal.getsignal(signal.SIGTERM) is not None and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_every_n_train_steps_writes_last_mid_epoch_and_keeps_the_epochs_best_file(
        trained_run: TrainedRun, tiny_fit_config: Path, tmp_path: Path) -> None:
    out = in_this_process(["fit", "--config", str(tiny_fit_config), "--trainer.max_epochs", "1",
                           "--checkpoint.every_n_train_steps", "2"], trained_run.cache)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = tmp_path / "runs" / "version_0" / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2 and "last.ckpt" in names and names[0].startswith("epoch00-step6"), names
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 6


def test_a_negative_save_interval_is_one_line(trained_run: TrainedRun, tiny_fit_config: Path) -> None:
    out = in_this_process(["fit", "--config", str(tiny_fit_config), "--checkpoint.every_n_train_steps", "-1"],
                          trained_run.cache)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == "ner_lit: error: --checkpoint.every_n_train_steps must be 0 (off) or more, got -1"
