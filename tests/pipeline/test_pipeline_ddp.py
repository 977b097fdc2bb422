"""DDP on the CPU (gloo, 2 processes) scores exactly what one process scores.

One checkpoint of the session's tiny run is evaluated in this process and under
``--trainer.strategy ddp --trainer.devices 2`` in new processes (Lightning re-runs the
command for rank 1). The 21 validation sentences (27 windows) in batches of at most 4
windows make 7 batches: rank 0 gets 4 (11 sentences) and rank 1 gets 3 (10 sentences). ``validate`` must log
the same scores; ``test`` must also report the same per-type supports (gold entity counts),
which would grow if a sentence were scored twice. ``fit`` under DDP shares each epoch
between the ranks and exports the best model from rank 0; SIGTERM to one rank mid-epoch stops
both after the same step with one ``last.ckpt``, from which a DDP resume ends with the
uninterrupted DDP fit's weights and scores. ``predict`` under DDP deals the input's chunks to
the ranks and writes one file, byte for byte the single-process one.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from ner_lit.checkpoint.format import load_checkpoint, spec_of
from ner_lit.checkpoint.spec import SECTION
from ner_lit.data.datamodule import NERDataModule
from ner_lit.data.samplers import SortedSentenceBatchSampler

from pipeline_fixtures import (
    EVAL_BATCH_SIZE,
    REPO,
    SAMPLE,
    TrainedRun,
    cli,
    cli_process,
    copy_run,
    last_value,
    versions,
)

pytestmark = pytest.mark.slow

DDP = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]


def evaluate(run: TrainedRun, root: Path, subcommand: str, ddp: bool) -> Path:
    """Run ``subcommand`` on a copy of the best checkpoint under ``root`` and return the folder it wrote."""
    best = copy_run(run.run_dir, root) / "checkpoints" / run.best.name
    args = [subcommand, *run.args("--trainer.default_root_dir", str(root), "--ckpt_path", str(best))]
    if ddp:
        proc = cli_process(args + DDP, run.cache)
        assert proc.returncode == 0, proc.stderr[-4000:]
    else:
        cli(args, run.cache)
    # Under DDP, rank 1 re-runs the command: it must log into the folder rank 0 chose, beside the checkpoint.
    assert versions(root) == [root / "version_0"]
    written = root / "version_0" / subcommand / best.stem / "dev"
    assert sorted(p.name for p in (root / "version_0" / subcommand).rglob("metrics.csv")) == ["metrics.csv"]
    return written


@pytest.fixture(scope="module")
def runs(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Path]:
    return {
        (sub, ddp): evaluate(trained_run, tmp_path_factory.mktemp(f"{sub}-{'ddp' if ddp else 'single'}"), sub, ddp)
        for sub in ("validate", "test")
        for ddp in (False, True)
    }


def test_validation_split_is_uneven_across_two_ranks(trained_run: TrainedRun, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NER_LIT_CACHE", str(trained_run.cache))
    dm = NERDataModule(data_dir=str(trained_run.data_dir), val_file="dev.tsv", eval_batch_size=EVAL_BATCH_SIZE)
    dm.use_spec(spec_of(trained_run.best))
    dm.setup("validate")
    items = dm.eval_items["validate"]
    counts = [len(it.encoded.windows) for it in items]
    lengths = [sum(len(w.input_ids) for w in it.encoded.windows) for it in items]
    shares = [SortedSentenceBatchSampler(counts, lengths, EVAL_BATCH_SIZE, rank, 2) for rank in (0, 1)]
    assert len(items) % 2 == 1
    assert max(counts) > 1  # some sentences span several windows
    assert len(shares[0]) != len(shares[1])
    assert sum(len(b) for b in shares[0]) != sum(len(b) for b in shares[1])


@pytest.mark.parametrize("key", ["val_F1c", "val_F1e"])
def test_ddp_validate_logs_the_single_process_scores_exactly(runs: dict[tuple[str, bool], Path], key: str) -> None:
    assert last_value(runs["validate", True], key) == last_value(runs["validate", False], key)


@pytest.mark.parametrize("key", ["val_loss", "val_acc"])
def test_ddp_validate_logs_the_single_process_loss_and_accuracy(runs: dict[tuple[str, bool], Path], key: str) -> None:
    # Means weighted by token counts: equal up to the order of the floating-point sums.
    assert float(last_value(runs["validate", True], key)) == pytest.approx(float(last_value(runs["validate", False], key)), rel=1e-6)


def test_ddp_test_counts_every_sentence_once(runs: dict[tuple[str, bool], Path]) -> None:
    single = json.loads((runs["test", False] / "test_report.json").read_text(encoding="utf-8"))
    ddp = json.loads((runs["test", True] / "test_report.json").read_text(encoding="utf-8"))
    assert ddp == single
    for key in ("test_F1c", "test_F1e"):
        assert last_value(runs["test", True], key) == last_value(runs["test", False], key)


@pytest.fixture(scope="module")
def ddp_fit(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fit-ddp")
    proc = cli_process(["fit", *trained_run.args("--trainer.default_root_dir", str(root)), *DDP], trained_run.cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert versions(root) == [root / "version_0"]
    return root / "version_0"


def test_ddp_fit_splits_each_epoch_between_the_ranks(trained_run: TrainedRun, ddp_fit: Path) -> None:
    single = torch.load(trained_run.last, map_location="cpu", weights_only=True)["global_step"]
    ddp = torch.load(ddp_fit / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert ddp == single // 2  # batches cut to a multiple of the world size, then dealt to 2 ranks


def test_ddp_fit_exports_the_best_model(ddp_fit: Path) -> None:
    assert (ddp_fit / "hf_model" / "config.json").is_file()
    assert (ddp_fit / "hf_model" / "tokenizer.json").is_file()


# --------------------------------------------------------------------------- preemption
PREEMPT_SEED = 20261207  # the batch rank 1 is signalled at is drawn from it: the same in every CI run
EXIT_PREEMPTED = 75


@pytest.fixture(scope="module")
def ddp_preempted(trained_run: TrainedRun, ddp_fit: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[int, subprocess.CompletedProcess, Path, subprocess.CompletedProcess]:
    """A DDP fit whose rank 1 (only) gets SIGTERM as a seeded batch starts, then ``--ckpt_path last`` under DDP.

    (batch, the stopped run, the folder it wrote, the resumed run). The uninterrupted DDP fit is ``ddp_fit``.
    """
    batch = random.Random(PREEMPT_SEED).randrange(1, 10)  # of the 12 batches rank 1 gets in the epoch
    root = tmp_path_factory.mktemp("fit-ddp-preempted")
    fault = root / "fault.yaml"
    fault.write_text(yaml.safe_dump({"trainer": {"callbacks": [{
        "class_path": "fault_plugins.SignalAtBatch",
        "init_args": {"epoch": 0, "batch": batch, "signal_name": "SIGTERM", "rank": 1}}]}}), encoding="utf-8")
    args = ["fit", *trained_run.args("--trainer.default_root_dir", str(root)), *DDP]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]))
        stopped = cli_process([*args, "--config", str(fault)], trained_run.cache)
        resumed = cli_process([*args, "--ckpt_path", "last"], trained_run.cache)
    return batch, stopped, root, resumed


def test_sigterm_to_one_ddp_rank_stops_both_after_the_same_step_with_one_checkpoint(ddp_preempted) -> None:
    batch, stopped, root, _ = ddp_preempted
    assert stopped.returncode == EXIT_PREEMPTED, stopped.stderr[-4000:]
    said = [line for line in stopped.stderr.splitlines() if line.startswith("ner_lit: stopped by")]
    assert len(said) == 1 and "a signal on another rank" in said[0], said  # rank 0 speaks for both
    last = torch.load(root / "version_0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (0, batch + 1)
    assert len(last["callbacks"]["ner_lit.ExactResume"]["rng_by_rank"]) == 2


def test_ddp_resume_after_sigterm_ends_with_the_uninterrupted_weights_and_scores(ddp_preempted, ddp_fit: Path) -> None:
    _, _, root, resumed = ddp_preempted
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    expected = torch.load(ddp_fit / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    got = load_checkpoint(root / "version_1" / "checkpoints" / "last.ckpt")
    assert got["global_step"] == expected["global_step"]
    assert got[SECTION]["weights_sha256"] == expected[SECTION]["weights_sha256"]
    for key in ("val_F1c", "val_F1e", "val_loss"):
        assert last_value(root / "version_1", key) == last_value(ddp_fit, key), key


# --------------------------------------------------------------------------- predict
@pytest.fixture(scope="module")
def predict_input(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 45 sample dev sentences and one of many windows (four joined): 46 sentences."""
    from ner_lit.corpus.klue import read_klue_tsv

    texts = [s.text for s in read_klue_tsv(SAMPLE / "dev.tsv")][:45]
    path = tmp_path_factory.mktemp("predict-input") / "in.txt"
    path.write_text("".join(t + "\n" for t in texts[:20] + [" ".join(texts[:4])] + texts[20:]), encoding="utf-8")
    return path


def predict_output(run: TrainedRun, source: Path, root: Path, chunk: int, ddp: bool) -> Path:
    output = root / "out" / "predictions.jsonl"
    args = ["predict", *run.args("--trainer.default_root_dir", str(root), "--ckpt_path", str(run.best),
                                 "--data.predict_file", str(source), "--prediction_writer.output", str(output),
                                 "--data.predict_chunk_size", str(chunk))]
    if ddp:
        proc = cli_process(args + DDP, run.cache)
        assert proc.returncode == 0, proc.stderr[-4000:]
    else:
        cli(args, run.cache)
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]  # no part or temporary file left
    return output


@pytest.mark.parametrize("chunk", [5, 4096])  # 10 chunks dealt 5/5; one chunk, rank 1 idle
def test_ddp_predict_writes_the_single_process_file(trained_run: TrainedRun, predict_input: Path, chunk: int,
                                                    tmp_path: Path) -> None:
    single = predict_output(trained_run, predict_input, tmp_path / "single", chunk, ddp=False)
    ddp = predict_output(trained_run, predict_input, tmp_path / "ddp", chunk, ddp=True)
    rows = [json.loads(line) for line in ddp.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in rows] == [f"in-{i}" for i in range(1, 47)]  # each sentence once, in order
    assert ddp.read_bytes() == single.read_bytes()
