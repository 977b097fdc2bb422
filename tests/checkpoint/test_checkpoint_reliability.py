"""Checkpoints: last.ckpt always the latest, best chosen by the checkpoints' own scores, atomic writes,
exact-resume RNG states, and damaged or inconsistent files refused with one line before anything starts.

Runs of the CLI are on the session's tiny run (tests/pipeline_fixtures.py) or copies of its
checkpoint edited to be wrong in one way each.
"""
from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch

from ner_lit.checkpoint.format import CheckpointError, load_checkpoint, weights_digest
from ner_lit.checkpoint.io import AtomicCheckpointIO, ExactResume, remove_stale_temps, temp_path
from ner_lit.checkpoint.runs import TEMP_MARK, choose_checkpoint
from ner_lit.checkpoint.spec import SECTION

from pipeline_fixtures import Outcome, TrainedRun, cli, finish, in_this_process, read_metrics, start_cli_process, versions


# --------------------------------------------------------------------------- editing checkpoints
def edited(source: Path, target: Path, edit: Callable[[dict[str, Any]], None], redigest: bool = False) -> Path:
    """A copy of a checkpoint changed by ``edit`` (and its digest recomputed, to reach the checks after it)."""
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    edit(ckpt)
    if redigest:
        ckpt[SECTION]["weights_sha256"] = weights_digest(ckpt["state_dict"])
    torch.save(ckpt, target)
    return target


def flip_inside_largest_tensor(source: Path, target: Path, length: int = 4096) -> Path:
    """A byte-for-byte copy with ``length`` bytes inverted in the middle of the largest stored tensor."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2 - length // 2
    length = min(length, info.file_size)
    data[start:start + length] = bytes(b ^ 0xFF for b in data[start:start + length])
    target.write_bytes(bytes(data))
    return target


# --------------------------------------------------------------------------- last.ckpt and best
@pytest.fixture(scope="module")
def flat_run(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three epochs at learning rate 0: the score never improves after epoch 0."""
    root = tmp_path_factory.mktemp("flat")
    cli(["fit", *trained_run.args("--trainer.default_root_dir", str(root), "--trainer.max_epochs", "3",
                                  "--trainer.limit_train_batches", "2", "--model.learning_rate", "0")], trained_run.cache)
    return root


def test_last_ckpt_holds_the_final_epoch_when_the_score_stops_improving(flat_run: Path) -> None:
    checkpoints = flat_run / "version_0" / "checkpoints"
    best = [p for p in checkpoints.glob("*.ckpt") if p.name != "last.ckpt"]
    assert [p.name.startswith("epoch00") for p in best] == [True]  # never improved after epoch 0
    last = load_checkpoint(checkpoints / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (2, 6)


def test_fit_ckpt_path_last_on_a_finished_run_trains_nothing_again(trained_run: TrainedRun, flat_run: Path) -> None:
    cli(["fit", *trained_run.args("--trainer.default_root_dir", str(flat_run), "--trainer.max_epochs", "3",
                                  "--trainer.limit_train_batches", "2", "--model.learning_rate", "0",
                                  "--ckpt_path", "last")], trained_run.cache)
    resumed = versions(flat_run)[-1]
    assert resumed.name == "version_1"
    metrics = resumed / "metrics.csv"
    assert not metrics.is_file() or not [row for row in read_metrics(resumed) if row.get("train_loss")]


def test_best_checkpoint_holds_weights_only_and_last_the_optimizer_state(trained_run: TrainedRun) -> None:
    best = torch.load(trained_run.best, map_location="cpu", weights_only=True)
    last = torch.load(trained_run.last, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in best and "lr_schedulers" not in best
    assert last["optimizer_states"] and last["lr_schedulers"] and "ner_lit.ExactResume" in last["callbacks"]
    assert best["state_dict"].keys() == last["state_dict"].keys()
    assert trained_run.best.stat().st_size < trained_run.last.stat().st_size / 2


@pytest.fixture(scope="module")
def scored_run(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose best files record 0.30 (epoch 0), 0.70 (epoch 1) and 0.50 (epoch 2), and whose
    last.ckpt's ModelCheckpoint state names the epoch-0 file (as after a kill at an epoch boundary)."""
    run = tmp_path_factory.mktemp("scored") / "version_0"
    folder = run / "checkpoints"
    folder.mkdir(parents=True)
    names = {}
    for epoch, score in enumerate((0.30, 0.70, 0.50)):
        def set_score(ckpt: dict, epoch: int = epoch, score: float = score) -> None:
            ckpt["epoch"] = epoch
            ckpt[SECTION]["monitor"] = {"name": "val_F1c", "mode": "max", "score": score}
        names[epoch] = edited(trained_run.best, folder / f"epoch{epoch:02d}.ckpt", set_score).name

    def stale_record(ckpt: dict) -> None:
        for state in ckpt["callbacks"].values():
            if "best_model_path" in state:
                state["best_model_path"] = str(folder / names[0])
    edited(trained_run.last, folder / "last.ckpt", stale_record)
    return run


def test_ckpt_path_best_picks_the_highest_score_recorded_in_the_checkpoints(scored_run: Path) -> None:
    choice = choose_checkpoint("best", scored_run.parent)
    assert choice.path == scored_run / "checkpoints" / "epoch01.ckpt"
    assert "run version_0" in choice.why and "0.7000" in choice.why and "epoch 1" in choice.why


def test_ckpt_path_best_follows_the_monitor_direction(trained_run: TrainedRun, tmp_path: Path) -> None:
    folder = tmp_path / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    for name, loss in (("a", 0.9), ("b", 0.2), ("c", 0.5)):
        def set_loss(ckpt: dict, loss: float = loss) -> None:
            ckpt[SECTION]["monitor"] = {"name": "val_loss", "mode": "min", "score": loss}
        edited(trained_run.best, folder / f"{name}.ckpt", set_loss)
    assert choose_checkpoint("best", tmp_path).path.name == "b.ckpt"


def test_test_ckpt_path_best_says_which_run_and_checkpoint_it_chose(trained_run: TrainedRun, scored_run: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "import sys; from ner_lit.checkpoint.runs import choose_checkpoint as c; "
                           "print(c(sys.argv[1], sys.argv[2]).describe(sys.argv[1]), file=sys.stderr)",
                           "best", str(scored_run.parent)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"--ckpt_path best: {scored_run / 'checkpoints' / 'epoch01.ckpt'} (run version_0")


# --------------------------------------------------------------------------- atomic writes
class _FailingWrite(AtomicCheckpointIO):
    """Writes half the bytes, then fails as a full disk would."""

    def write(self, checkpoint: dict, f) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")


def test_a_failed_save_leaves_the_previous_file_whole_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.arange(4)}, target)
    before = target.read_bytes()
    with pytest.raises(OSError):
        _FailingWrite().save_checkpoint({"w": torch.arange(8)}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_the_temporary_file_is_beside_the_target_so_the_rename_never_crosses_filesystems(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((Path(a), Path(b))), real_replace(a, b)))
    target = tmp_path / "sub" / "epoch00.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, target)
    assert renames == [(temp_path(target), target)]
    assert temp_path(target).parent == target.parent and TEMP_MARK in temp_path(target).name
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))


def test_temporary_files_of_dead_writers_are_removed_and_those_of_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".last.ckpt{TEMP_MARK}{int(dead.stdout)}"
        busy = tmp_path / f".last.ckpt{TEMP_MARK}{live.pid}"
        other = tmp_path / ".notes.tmp.1"
        for p in (stale, busy, other):
            p.write_bytes(b"x")
        assert remove_stale_temps(tmp_path) == [stale]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([busy.name, other.name])
    finally:
        live.kill()
        live.wait()


# --------------------------------------------------------------------------- RNG states
def draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_states_survive_a_weights_only_checkpoint_and_come_back_at_the_next_batch(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    saver = ExactResume()
    torch.save({"callbacks": {saver.state_key: saver.state_dict()}}, tmp_path / "c.ckpt")
    expected = draws()
    draws()  # the run goes on: the generators move
    loaded = ExactResume()
    loaded.load_state_dict(torch.load(tmp_path / "c.ckpt", weights_only=True)["callbacks"][loaded.state_key])
    loaded.on_train_batch_start(None, None, None, 0)  # type: ignore[arg-type]
    assert draws() == expected
    saver.on_train_batch_start(None, None, None, 0)  # type: ignore[arg-type]  # the writing run rewinds alike
    assert draws() == expected


# --------------------------------------------------------------------------- refused checkpoints
def test_a_flipped_block_inside_a_tensor_is_refused_naming_the_file(trained_run: TrainedRun, tmp_path: Path) -> None:
    damaged = flip_inside_largest_tensor(trained_run.best, tmp_path / "damaged.ckpt")
    torch.load(damaged, map_location="cpu", weights_only=True)  # still a readable file: only the digest tells
    with pytest.raises(CheckpointError, match=r"damaged\.ckpt: its weights do not match the digest"):
        load_checkpoint(damaged)


def test_a_checkpoint_without_a_digest_loads_with_a_note(trained_run: TrainedRun, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    old = edited(trained_run.best, tmp_path / "old.ckpt", lambda c: c[SECTION].pop("weights_sha256"))
    assert load_checkpoint(old)[SECTION]["labels"]
    assert f"{old} carries no weights digest" in capsys.readouterr().err


BAD_EDITS: dict[str, tuple[Callable[[dict], None], bool, str]] = {
    # name -> (edit, recompute the digest, the message fragment)
    "labels disagree with the classifier": (
        lambda c: c[SECTION].update(labels=c[SECTION]["labels"][:5]), False,
        "its label list and tagging need 40 outputs (8 character slots x 5 labels) but its model config has 104"),
    "classifier of the wrong shape": (
        lambda c: c["state_dict"].update({"model.classifier.weight": c["state_dict"]["model.classifier.weight"][:5],
                                          "model.classifier.bias": c["state_dict"]["model.classifier.bias"][:5]}),
        True, "its weights do not fit its model config: 2 with the wrong shape"),
    "no tokenizer files": (lambda c: c[SECTION].update(tokenizer_files={}), False, "holds no tokenizer files"),
    "a newer format": (lambda c: c[SECTION].update(format=99), False, "written by a newer ner_lit (format 99"),
}


@pytest.mark.parametrize("name", sorted(BAD_EDITS))
def test_an_inconsistent_checkpoint_is_refused_when_read(name: str, trained_run: TrainedRun, tmp_path: Path) -> None:
    edit, redigest, expected = BAD_EDITS[name]
    bad = edited(trained_run.best, tmp_path / "bad.ckpt", edit, redigest)
    with pytest.raises(CheckpointError, match="bad.ckpt: ") as err:
        load_checkpoint(bad)
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def refused(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    """test / fit --ckpt_path / serve on bad checkpoints."""
    tmp = tmp_path_factory.mktemp("refused")
    damaged = flip_inside_largest_tensor(trained_run.best, tmp / "damaged.ckpt")
    few = edited(trained_run.best, tmp / "five-labels.ckpt", BAD_EDITS["labels disagree with the classifier"][0])
    shape = edited(trained_run.best, tmp / "shape.ckpt", BAD_EDITS["classifier of the wrong shape"][0], redigest=True)
    root = ["--trainer.default_root_dir", str(tmp / "runs")]
    commands = {
        "test damaged": ["test", *trained_run.args(*root, "--ckpt_path", str(damaged))],
        "fit damaged": ["fit", *trained_run.args(*root, "--ckpt_path", str(damaged))],
        "serve damaged": ["serve", "--ckpt_path", str(damaged), "--port", "0"],
        "test five labels": ["test", *trained_run.args(*root, "--ckpt_path", str(few))],
        "serve five labels": ["serve", "--ckpt_path", str(few), "--port", "0"],
        "predict wrong shape": ["predict", *trained_run.args(*root, "--ckpt_path", str(shape),
                                                             "--data.predict_file", str(trained_run.data_dir / "dev.tsv"))],
        "fit from a weights-only best": ["fit", *trained_run.args(*root, "--ckpt_path", str(trained_run.best))],
    }
    # One command of each kind in a new process, through ``python -m ner_lit``'s own entry point;
    # the others in this process meanwhile (a torch and Lightning import saved each).
    started = {name: start_cli_process(commands[name], trained_run.cache)
               for name in ("fit damaged", "serve damaged", "predict wrong shape")}
    outcomes = {name: in_this_process(args, trained_run.cache) for name, args in commands.items() if name not in started}
    for name, proc in started.items():
        done = finish(proc, timeout=240)
        outcomes[name] = Outcome(done.returncode, done.stdout, done.stderr)
    yield outcomes


REFUSALS = {
    "test damaged": "damaged.ckpt: its weights do not match the digest",
    "fit damaged": "damaged.ckpt: its weights do not match the digest",
    "serve damaged": "damaged.ckpt: its weights do not match the digest",
    "test five labels": "its label list and tagging need 40 outputs (8 character slots x 5 labels) but its model config has 104",
    "serve five labels": "its label list and tagging need 40 outputs (8 character slots x 5 labels) but its model config has 104",
    "predict wrong shape": "shape.ckpt: its weights do not fit its model config",
    "fit from a weights-only best": "holds the weights only (a best checkpoint)",
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_a_bad_checkpoint_ends_the_command_with_one_error_line_before_it_starts(
        name: str, refused: dict[str, Outcome], trained_run: TrainedRun) -> None:
    proc = refused[name]
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("ner_lit: error: "), proc.stderr[-4000:]
    assert REFUSALS[name] in errors[0]
    assert "Serving" not in proc.stdout + proc.stderr and "Testing" not in proc.stdout + proc.stderr
