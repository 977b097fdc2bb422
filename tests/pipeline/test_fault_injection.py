"""Stop a training run at pseudo-random moments, resume it with ``--ckpt_path last``: the same run.

A two-epoch fit of the tiny model (10 batches an epoch) is run once uninterrupted, and
once per fault, the moments drawn from a fixed seed so that every CI run stops at the same
ones (all runs at once, then all resumes at once):

* mid-epoch: SIGKILL after a training batch of epoch 1 (``last.ckpt`` is epoch 0's);
* during a save: SIGKILL with part of ``last.ckpt`` (or of the best file) of epoch 1 written;
* from outside: ``kill -9`` by this test as soon as a checkpoint's temporary file appears,
  whatever the process is doing by then;
* preempted: SIGTERM arriving as a batch of epoch 1 starts; the run finishes that step, writes
  a mid-epoch ``last.ckpt`` and exits with status 75;
* interrupted from outside: SIGINT (Ctrl-C) sent by this test once the run has passed a batch
  of epoch 0, wherever it is by then;
* killed after a mid-epoch save: ``--checkpoint.every_n_train_steps 3``, then SIGKILL after a
  batch of epoch 1 (``last.ckpt`` is the latest step-3 multiple's, mid-epoch).

The runs folders are on a tmpfs (``/dev/shm``) where there is one, a different filesystem
from the system temp folder: the case where Lightning's own writer left torn files. After
each kill, every ``.ckpt`` on disk must load with ner_lit's loader (digest included); after
the resume, the final scores and weights must equal the uninterrupted run's exactly and no
temporary file may be left.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest
import torch
import yaml

from ner_lit.checkpoint.format import load_checkpoint
from ner_lit.checkpoint.runs import TEMP_MARK
from ner_lit.checkpoint.spec import SECTION

from pipeline_fixtures import REPO, TrainedRun, finish, last_value, start_cli_process, tiny_config, versions

pytestmark = pytest.mark.slow

EPOCHS = 2
BATCHES = 10  # training batches an epoch
SEED = 20261202  # the kill moments are drawn from it: the same in every CI run
SCORES = ("val_F1c", "val_F1e", "val_loss")
CUE = "cue"  # the file a run writes for the test to signal it


EXIT_PREEMPTED = 75
SAVE_EVERY = 3  # --checkpoint.every_n_train_steps of the mid-epoch-save fault


@dataclass(frozen=True)
class Fault:
    name: str
    config: dict  # extra trainer settings (callbacks / plugins) that kill the process
    external: bool = False  # killed by the test when a temporary checkpoint file appears
    args: tuple[str, ...] = ()  # extra command-line options
    signal_after: Optional[tuple[int, int]] = None  # (epoch, batch) after which the test sends SIGINT
    preempted: bool = False  # stops by a signal, with last.ckpt written, exit status 75
    last_step: Optional[int] = None  # the global step last.ckpt must hold after the stop, when known


def faults(seed: int) -> list[Fault]:
    rng = random.Random(seed)
    batch = rng.randrange(BATCHES - 1)
    last_cut, best_cut = rng.uniform(0.02, 0.98), rng.uniform(0.02, 0.98)
    # Drawn after the first ones, so that those stay what they were.
    term_batch, cue_batch, kill_batch = rng.randrange(BATCHES - 1), rng.randrange(BATCHES - 2), rng.randrange(3, BATCHES - 1)
    kill_step = BATCHES + kill_batch + 1  # the step the kill comes after (before that step's own save)
    return [
        Fault(f"mid-epoch-1-after-batch-{batch}",
              {"callbacks": [{"class_path": "fault_plugins.KillAtBatch", "init_args": {"epoch": 1, "batch": batch}}]}),
        Fault(f"during-last-save-{last_cut:.2f}",
              {"plugins": [{"class_path": "fault_plugins.TornSave",
                            "init_args": {"prefix": "last", "occurrence": 2, "fraction": last_cut}}]}),
        Fault(f"during-best-save-{best_cut:.2f}",
              {"plugins": [{"class_path": "fault_plugins.TornSave",
                            "init_args": {"prefix": "epoch01", "occurrence": 1, "fraction": best_cut}}]}),
        Fault("external-kill-at-a-temp-file", {}, external=True),
        Fault(f"sigterm-as-epoch-1-batch-{term_batch}-starts",
              {"callbacks": [{"class_path": "fault_plugins.SignalAtBatch",
                              "init_args": {"epoch": 1, "batch": term_batch, "signal_name": "SIGTERM"}}]},
              preempted=True, last_step=BATCHES + term_batch + 1),
        Fault(f"sigint-from-outside-after-epoch-0-batch-{cue_batch}", {}, signal_after=(0, cue_batch), preempted=True),
        Fault(f"kill-after-a-mid-epoch-save-epoch-1-batch-{kill_batch}",
              {"callbacks": [{"class_path": "fault_plugins.KillAtBatch", "init_args": {"epoch": 1, "batch": kill_batch}}]},
              args=("--checkpoint.every_n_train_steps", str(SAVE_EVERY)),
              last_step=max(BATCHES, (kill_step - 1) // SAVE_EVERY * SAVE_EVERY)),
    ]


FAULTS = faults(SEED)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A folder on a tmpfs if the machine has one (removed after the module)."""
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="ner_lit-faults-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if TEMP_MARK in p.name]


def ckpt_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.ckpt"))


def act_from_outside(started: dict[str, tuple[Path, subprocess.Popen]], timeout: float = 240) -> None:
    """Watch every run with a fault from outside at once, and act on each when its moment comes:

    ``kill -9`` as soon as ``last.ckpt`` exists and a checkpoint's temporary file is seen;
    SIGINT as soon as the run's cue file (written after its chosen batch) exists.
    """
    waiting = {name: started[name] for name in (f.name for f in FAULTS if f.external or f.signal_after)}
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for name, (root, proc) in list(waiting.items()):
            fault = next(f for f in FAULTS if f.name == name)
            if proc.poll() is not None:
                del waiting[name]
            elif fault.external and any(root.glob("version_*/checkpoints/last.ckpt")) and saving(root):
                proc.send_signal(signal.SIGKILL)
                del waiting[name]
            elif fault.signal_after and (root / CUE).exists():
                proc.send_signal(signal.SIGINT)
                del waiting[name]
        # A save lasts milliseconds: look often while a kill waits for one, else leave the cores to the runs.
        time.sleep(0.0005 if any(f.external for f in FAULTS if f.name in waiting) else 0.01)


def saving(root: Path) -> bool:
    """Whether a checkpoint's temporary file is in a run's checkpoint folder now (cheaper than :func:`temp_files`)."""
    return any(TEMP_MARK in p.name for p in root.glob("version_*/checkpoints/.*"))


@dataclass
class Outcome:
    root: Path
    killed: subprocess.CompletedProcess
    after_kill: dict[str, int]  # each .ckpt on disk after the kill -> its epoch
    steps_after_kill: dict[str, int]  # each .ckpt on disk after the kill -> its global step
    temps_after_kill: list[Path]
    load_errors: list[str]
    resumed: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def runs(trained_run: TrainedRun, scratch: Path, monkeypatch_module: pytest.MonkeyPatch) -> tuple[Path, dict[str, Outcome]]:
    """(the uninterrupted run's dir, fault name -> what its kill and resume left)."""
    monkeypatch_module.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    # Eight runs share the cores at once: one OpenMP thread each, or their spinning threads take
    # turns at stealing each other's time.
    monkeypatch_module.setenv("OMP_NUM_THREADS", "1")
    base_cfg = tiny_config(trained_run.data_dir, scratch / "unused")
    base_cfg["trainer"].update({"max_epochs": EPOCHS, "limit_train_batches": BATCHES})
    source = scratch / "tiny.yaml"
    source.write_text(yaml.safe_dump(base_cfg), encoding="utf-8")

    def args(root: Path, *extra: str) -> list[str]:
        return ["fit", "--config", str(source), "--trainer.default_root_dir", str(root), *extra]

    reference = start_cli_process(args(scratch / "reference"), trained_run.cache)
    started: dict[str, tuple[Path, subprocess.Popen]] = {}
    for fault in FAULTS:
        root = scratch / fault.name
        extra: list[str] = list(fault.args)
        config = dict(fault.config)
        if fault.signal_after:
            epoch, batch = fault.signal_after
            config["callbacks"] = [{"class_path": "fault_plugins.TouchAtBatch",
                                    "init_args": {"epoch": epoch, "batch": batch, "path": str(root / CUE)}}]
        if config:
            path = scratch / f"{fault.name}.yaml"
            path.write_text(yaml.safe_dump({"trainer": config}), encoding="utf-8")
            extra += ["--config", str(path)]
        started[fault.name] = (root, start_cli_process(args(root, *extra), trained_run.cache))
    act_from_outside(started)

    killed = {name: finish(proc) for name, (_, proc) in started.items()}
    ref = finish(reference)
    assert ref.returncode == 0, ref.stderr[-4000:]
    resumes: dict[str, tuple[subprocess.Popen, dict[str, int], dict[str, int], list[Path], list[str]]] = {}
    for name, (root, _) in started.items():
        epochs, steps, errors = {}, {}, []
        for p in ckpt_files(root):
            try:
                ckpt = load_checkpoint(p)
                epochs[str(p.relative_to(root))] = int(ckpt["epoch"])
                steps[str(p.relative_to(root))] = int(ckpt["global_step"])
            except Exception as exc:  # noqa: BLE001 - recorded, asserted on by the tests
                errors.append(f"{p}: {exc}")
        temps = temp_files(root)
        resumes[name] = (start_cli_process(args(root, "--ckpt_path", "last"), trained_run.cache), epochs, steps, temps, errors)
    outcomes = {name: Outcome(started[name][0], killed[name], epochs, steps, temps, errors, finish(proc))
                for name, (proc, epochs, steps, temps, errors) in resumes.items()}
    return scratch / "reference" / "version_0", outcomes


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def final_last(root: Path) -> Optional[Path]:
    """The newest run's last.ckpt (a run killed after its last save resumes into a run with nothing to do)."""
    for run in reversed(versions(root)):
        if (run / "checkpoints" / "last.ckpt").is_file():
            return run / "checkpoints" / "last.ckpt"
    return None


def scored_run(root: Path) -> Path:
    """The newest run that validated (a resume of a run that had finished has nothing to train)."""
    for run in reversed(versions(root)):
        metrics = run / "metrics.csv"
        if metrics.is_file() and "val_F1c" in metrics.read_text(encoding="utf-8"):
            return run
    raise AssertionError(f"no run under {root} logged val_F1c")


NAMES = [f.name for f in FAULTS]


@pytest.mark.parametrize("name", NAMES)
def test_a_kill_leaves_only_whole_checkpoints(name: str, runs: tuple[Path, dict[str, Outcome]]) -> None:
    outcome = runs[1][name]
    fault = next(f for f in FAULTS if f.name == name)
    if fault.external:  # killed wherever the process was by then, or finished before the test saw a temp file
        assert outcome.killed.returncode in (-signal.SIGKILL, 0), outcome.killed.stderr[-3000:]
        print(f"{name}: rc {outcome.killed.returncode}, temporary files after the kill: {outcome.temps_after_kill}")
    elif fault.preempted:  # stopped on its own, after saving
        assert outcome.killed.returncode == EXIT_PREEMPTED, outcome.killed.stderr[-3000:]
    else:  # the injected faults must really have killed the run
        assert outcome.killed.returncode == -signal.SIGKILL, outcome.killed.stderr[-3000:]
    assert outcome.load_errors == []
    assert "version_0/checkpoints/last.ckpt" in outcome.after_kill
    if "during" in name:  # the torn bytes went to the temporary file, not to a checkpoint
        assert [p.parent.name for p in outcome.temps_after_kill] == ["checkpoints"]
    if "during-last-save" in name or name.startswith("mid-epoch"):
        assert outcome.after_kill["version_0/checkpoints/last.ckpt"] == 0


PREEMPTED = [f for f in FAULTS if f.preempted]


@pytest.mark.parametrize("fault", PREEMPTED, ids=[f.name for f in PREEMPTED])
def test_a_signal_ends_the_run_with_one_line_saying_how_to_resume(fault: Fault, runs: tuple[Path, dict[str, Outcome]]) -> None:
    outcome = runs[1][fault.name]
    assert outcome.killed.returncode == EXIT_PREEMPTED, outcome.killed.stderr[-3000:]
    said = [line for line in outcome.killed.stderr.splitlines() if line.startswith("ner_lit: stopped by")]
    signal_name = "SIGINT" if fault.signal_after else "SIGTERM"
    last = outcome.root / "version_0" / "checkpoints" / "last.ckpt"
    assert len(said) == 1 and said[0].startswith(f"ner_lit: stopped by {signal_name} in epoch "), said
    assert f"--ckpt_path {last}`" in said[0]
    assert "Traceback" not in outcome.killed.stderr


@pytest.mark.parametrize("fault", PREEMPTED, ids=[f.name for f in PREEMPTED])
def test_a_signal_writes_last_ckpt_after_the_step_under_way(fault: Fault, runs: tuple[Path, dict[str, Outcome]]) -> None:
    outcome = runs[1][fault.name]
    step = outcome.steps_after_kill["version_0/checkpoints/last.ckpt"]
    if fault.last_step is not None:  # signalled as that step began: the step was finished, then saved
        assert step == fault.last_step
        assert step % BATCHES != 0  # mid-epoch
    else:  # signalled from outside after the cue: saved at the next step's end or at an epoch end
        epoch, batch = fault.signal_after
        assert step > epoch * BATCHES + batch


def test_every_n_train_steps_leaves_a_mid_epoch_last_ckpt_that_a_kill_keeps(runs: tuple[Path, dict[str, Outcome]]) -> None:
    fault = next(f for f in FAULTS if f.args)
    outcome = runs[1][fault.name]
    assert outcome.killed.returncode == -signal.SIGKILL
    assert outcome.steps_after_kill["version_0/checkpoints/last.ckpt"] == fault.last_step
    assert outcome.after_kill["version_0/checkpoints/last.ckpt"] == 1
    assert fault.last_step % SAVE_EVERY == 0 and fault.last_step % BATCHES != 0


@pytest.mark.parametrize("name", NAMES)
def test_resuming_from_last_gives_the_uninterrupted_runs_scores_and_weights(
        name: str, runs: tuple[Path, dict[str, Outcome]]) -> None:
    reference, outcomes = runs
    outcome = outcomes[name]
    assert outcome.resumed.returncode == 0, outcome.resumed.stderr[-4000:]
    assert f"--ckpt_path last: {outcome.root / 'version_0' / 'checkpoints' / 'last.ckpt'}" in outcome.resumed.stderr
    newest = scored_run(outcome.root)
    for key in SCORES:
        assert last_value(newest, key) == last_value(reference, key), key
    last = final_last(outcome.root)
    assert last is not None
    expected = torch.load(reference / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    got = load_checkpoint(last)
    assert (got["epoch"], got["global_step"]) == (expected["epoch"], expected["global_step"])
    assert got[SECTION]["weights_sha256"] == expected[SECTION]["weights_sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_after_the_resume_every_checkpoint_loads_and_no_temporary_file_is_left(
        name: str, runs: tuple[Path, dict[str, Outcome]]) -> None:
    outcome = runs[1][name]
    assert outcome.resumed.returncode == 0, outcome.resumed.stderr[-4000:]
    assert temp_files(outcome.root) == []
    files = ckpt_files(outcome.root)
    assert files
    for p in files:
        load_checkpoint(p)
