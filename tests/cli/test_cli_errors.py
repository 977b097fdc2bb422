"""Every bad input ends with one clear message on stderr and exit status 2, never a traceback.

The cases that go through each command's start (fit, test, predict) run ``python -m ner_lit``
in new processes, offline (HF_HUB_OFFLINE=1), started together; the others run the same
``main`` in this process, which saves a torch and Lightning import each. Either way an
exception that escaped ``main`` would fail the test. One module fixture runs them all and each
test checks one.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv
from ner_lit.corpus.records import Sentence

from pipeline_fixtures import Outcome, TrainedRun, finish, in_this_process, start_cli_process

#: Cases run as new processes: one per command, through ``python -m ner_lit``'s own entry point.
IN_NEW_PROCESSES = ("missing train file", "checkpoint is not ner_lit's", "byte that is not UTF-8",
                    "predict line over max_chars")


def cases(run: TrainedRun, tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (command line, a fragment the error message must contain)."""
    (tmp / "empty.tsv").write_text("", encoding="utf-8")
    (tmp / "foo.csv").write_text("전,O\n", encoding="utf-8")
    (tmp / "notes.txt").write_text("this is not a checkpoint\n", encoding="utf-8")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 0}, tmp / "plain.ckpt")
    dev = read_klue_tsv(run.data_dir / "dev.tsv")[:3]
    odd = Sentence("odd-1", "화성에서 왔다", ["B-PL", "I-PL", "O", "O", "O", "O", "O"])
    write_klue_tsv([*dev, odd], tmp / "dev-odd-label.tsv")

    (tmp / "blocker").write_text("a file where a directory is expected\n", encoding="utf-8")
    (tmp / "long-line.tsv").write_text("## s1\t서울\n" + "서" * 1_000_000 + "\n\n", encoding="utf-8")
    dev_bytes = (run.data_dir / "dev.tsv").read_bytes().split(b"\n")
    dev_bytes[6] = dev_bytes[6][:3] + b"\xff" + dev_bytes[6][3:]  # after the first (3-byte) character
    (tmp / "dev-latin1.tsv").write_bytes(b"\n".join(dev_bytes))
    (tmp / "long.txt").write_text("서울에 갔다\n" + "가" * 60 + "\n", encoding="utf-8")

    fit = ["fit", *run.args("--trainer.default_root_dir", str(tmp / "runs"))]
    test = ["test", *run.args("--trainer.default_root_dir", str(tmp / "runs"))]
    return {
        "missing train file": (fit + ["--data.train_file", str(tmp / "missing.tsv")], f"{tmp / 'missing.tsv'}: no such file"),
        "empty train file": (fit + ["--data.train_file", str(tmp / "empty.tsv")], f"{tmp / 'empty.tsv'}: no sentences"),
        "unknown format": (fit + ["--data.train_file", str(tmp / "foo.csv")], "unknown extension '.csv'"),
        "max_length too small": (fit + ["--data.max_length", "2"], "max_length=2 leaves no room for text"),
        "negative batch size": (fit + ["--data.batch_size", "-1"], "--data.batch_size -1: expected at least 1"),
        "no character slots": (fit + ["--data.char_slots", "0"], "--data.char_slots 0: expected at least 1 label row per token"),
        "missing pretrained model": (fit + ["--model.pretrained", "/nonexistent/dir"], "--model.pretrained '/nonexistent/dir'"),
        "checkpoint is a text file": (test + ["--ckpt_path", str(tmp / "notes.txt")], "not a readable PyTorch checkpoint"),
        "checkpoint is not ner_lit's": (test + ["--ckpt_path", str(tmp / "plain.ckpt")], "not a ner_lit checkpoint"),
        "validation label unknown to training": (fit + ["--data.val_file", str(tmp / "dev-odd-label.tsv")], "tag 'B-PL' is not in the label set"),
        "runs root not writable": (["fit", *run.args("--trainer.default_root_dir", str(tmp / "blocker" / "runs"))],
                                   f"{tmp / 'blocker' / 'runs'}: the runs root (--trainer.default_root_dir) is not a writable"),
        "cache not writable": (test + ["--ckpt_path", str(run.best), "--data.cache_dir", str(tmp / "blocker" / "cache")],
                               f"{tmp / 'blocker' / 'cache'}: the cache directory (--data.cache_dir"),
        "50 MB-style line without a tab": (fit + ["--data.train_file", str(tmp / "long-line.tsv")],
                                           f"{tmp / 'long-line.tsv'}:2: no tab in '서서"),
        "byte that is not UTF-8": (fit + ["--data.val_file", str(tmp / "dev-latin1.tsv")],
                                   f"{tmp / 'dev-latin1.tsv'}:7: byte 0xff at byte column 4 is not UTF-8"),
        "predict line over max_chars": (["predict", *run.args("--trainer.default_root_dir", str(tmp / "runs"),
                                                              "--ckpt_path", str(run.best), "--data.predict_file",
                                                              str(tmp / "long.txt"), "--data.max_chars", "50")],
                                        f"{tmp / 'long.txt'}:2: sentence 'long-2' has 60 characters, expected at most max_chars=50"),
    }


def own_root(args: list[str], shared: Path, k: int) -> list[str]:
    """The command with a runs root of its own under ``shared``: the commands run at once, and a
    failed one removes the run folder it made, which must not be another's."""
    return [str(shared / f"case{k}") if a == str(shared) else a for a in args]


@pytest.fixture(scope="module")
def results(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Outcome, str]]:
    tmp = tmp_path_factory.mktemp("bad-inputs")
    table = {name: (own_root(args, tmp / "runs", k), expected)
             for k, (name, (args, expected)) in enumerate(cases(trained_run, tmp).items())}
    started = {name: start_cli_process(table[name][0], trained_run.cache) for name in IN_NEW_PROCESSES}
    outcomes = {name: in_this_process(args, trained_run.cache)
                for name, (args, _) in table.items() if name not in started}  # while the processes run
    for name, proc in started.items():
        done = finish(proc)
        outcomes[name] = Outcome(done.returncode, done.stdout, done.stderr)
    return {name: (outcomes[name], expected) for name, (_, expected) in table.items()}


CASES = [
    "missing train file",
    "empty train file",
    "unknown format",
    "max_length too small",
    "negative batch size",
    "missing pretrained model",
    "checkpoint is a text file",
    "checkpoint is not ner_lit's",
    "validation label unknown to training",
    "runs root not writable",
    "cache not writable",
    "50 MB-style line without a tab",
    "byte that is not UTF-8",
    "predict line over max_chars",
]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_exits_2_with_one_error_line_and_no_traceback(
        name: str, results: dict[str, tuple[Outcome, str]]) -> None:
    proc, expected = results[name]
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr[-4000:]
    assert errors[0].startswith("ner_lit: error: ")
    assert expected in errors[0]


def test_a_huge_bad_line_gives_a_short_error(results: dict[str, tuple[Outcome, str]]) -> None:
    proc, _ = results["50 MB-style line without a tab"]
    assert "… (1,000,000 characters)" in proc.stderr
    assert len(proc.stderr) < 2000


def test_the_validation_tag_error_names_the_line_of_the_tag(
        trained_run: TrainedRun, results: dict[str, tuple[Outcome, str]]) -> None:
    proc, _ = results["validation label unknown to training"]
    error = next(line for line in proc.stderr.splitlines() if line.startswith("ner_lit: error: "))
    path = error.removeprefix("ner_lit: error: ").split(":", 1)[0]
    line = Path(path).read_text(encoding="utf-8").split("\n").index("화\tB-PL") + 1
    assert error.startswith(f"ner_lit: error: {path}:{line}: sentence 'odd-1', character 0")
