"""The CLI answer cache: replayed --help and unknown-option errors are byte for byte the real parser's."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from ner_lit.cli import cache as cli_cache
from ner_lit.files import write_text_atomic

REPO = Path(__file__).resolve().parents[2]
PROG = "ner_lit"


def real(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str, int]:
    """What the real path (LightningCLI's parser, in this process) prints for ``args``, and its exit status."""
    from ner_lit.cli.lightning import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(args, prog=PROG)
    out, err = capsys.readouterr()
    return out, err, exit_.value.code


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache folder of this module's own, holding the entry one real ``fit --help`` recorded."""
    home = tmp_path_factory.mktemp("cli-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NER_LIT_CACHE", str(home))
        mp.delenv("NER_LIT_CLI_CACHE", raising=False)
        from ner_lit.cli.lightning import main

        with pytest.raises(SystemExit):
            main(["fit", "--help"], prog=PROG)
        yield home


@pytest.fixture
def cached(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NER_LIT_CACHE", str(cache_home))
    monkeypatch.delenv("NER_LIT_CLI_CACHE", raising=False)
    return cache_home


def test_a_real_parse_records_one_entry_for_every_lightning_subcommand(cached: Path) -> None:
    (entry_file,) = (cached / "cli").glob("*.json")
    entry = json.loads(entry_file.read_text(encoding="utf-8"))
    assert entry["key"] == cli_cache.cache_key(PROG)
    assert set(entry["subcommands"]) == set(cli_cache.SUBCOMMANDS)
    for sub in entry["subcommands"].values():
        assert {"help", "unrecognized", "names", "typed", "options", "values"} <= set(sub)
        assert {"trainer.max_epochs", "model.learning_rate", "data.batch_size"} <= set(sub["values"]["keys"])
        assert "model.pretrained" not in sub["values"]["keys"]  # a string: every word is a value it accepts
    assert not list((cached / "cli").glob(".*.tmp"))  # written atomically: no temporary left


@pytest.mark.parametrize("args", [
    ["fit", "--help"], ["validate", "-h"], ["test", "--help"], ["predict", "--help"],
    ["fit", "--model.learning_rte", "1"],
    ["predict", "--foo=2", "x", "--data.no_such_key", "3"],
    ["test", "stray", "words"],
    ["validate", "--checkpoint.no_such_key", "1"],
    # A plain word given to a numeric or boolean option: the value error, for each kind of type.
    ["fit", "--trainer.max_epochs", "abc"],  # Optional[int]
    ["fit", "--model.learning_rate=fast"],  # float
    ["test", "--data.batch_size", "big"],  # int
    ["predict", "--model.freeze_word_embeddings", "maybe"],  # bool
    ["validate", "--model.head_learning_rate", "x1"],  # Optional[float]
    ["fit", "--trainer.limit_val_batches", "Some_thing"],  # Union[int, float, None]
    ["fit", "--trainer.fast_dev_run", "never"],  # Union[int, bool]
], ids=lambda a: " ".join(a))
def test_a_replayed_answer_is_byte_identical_to_the_real_parser(args: list[str], cached: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    replay = cli_cache.answer(args, PROG)
    assert replay is not None
    assert replay == real(args, capsys)


@pytest.mark.parametrize("args", [
    ["fit", "--model.learning_rat", "1", "--foo"],  # an abbreviation argparse expands: a known option
    ["fit", "--trainer.logger.foo", "1"],  # below a typed option: jsonargparse checks it against the type
    ["validate", "--model.pretrained.oops", "1"],
    ["fit", "--model.learning_rate", "abc", "--foo"],  # a known option, whose bad value is the reported error
    ["fit", "--config", "configs/tiny.yaml", "--foo"],
    ["fit", "-x"], ["fit", "--foo", "--", "x"], ["fit", "--trainer.callbacks+=X"], ["fit", "--a b"],
    ["fit"], ["fit", "--help", "--foo"], ["serve", "--help"], ["fti", "--help"],
    # Values a numeric or boolean type may accept (or that YAML reads as something else than the word).
    ["fit", "--trainer.max_epochs", "null"], ["fit", "--trainer.max_epochs", "None"], ["fit", "--model.dropout", "inf"],
    ["fit", "--model.dropout", "NaN"], ["fit", "--model.freeze_word_embeddings", "yes"],
    ["fit", "--model.freeze_word_embeddings=True"], ["fit", "--model.freeze_word_embeddings", "off"],
    ["fit", "--trainer.max_epochs", "1.5"], ["fit", "--trainer.max_epochs", "-1"], ["fit", "--trainer.max_epochs", "'a'"],
    ["fit", "--trainer.max_epochs", "a b"], ["fit", "--trainer.max_epochs", "{a: 1}"], ["fit", "--trainer.max_epochs", ""],
    # Not one plain typed option and its value alone.
    ["fit", "--trainer.max_epoch", "abc"],  # an abbreviation
    ["fit", "--trainer.max_epochs", "abc", "--data.batch_size", "x"], ["fit", "--trainer.max_epochs"],
    ["fit", "--model.pretrained", "abc"], ["fit", "--model.schedule", "abc"], ["fit", "--trainer.precision", "abc"],
    ["fit", "--config", "abc"], ["fit", "--trainer.max_epochs=abc", "x"],
], ids=lambda a: " ".join(a))
def test_a_line_with_anything_the_parser_might_accept_is_not_replayed(args: list[str], cached: Path) -> None:
    assert cli_cache.answer(args, PROG) is None


def test_a_line_not_replayed_gets_the_real_parsers_own_error(cached: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, err, status = real(["fit", "--trainer.logger.foo", "1"], capsys)
    assert status == 2
    assert 'error: Parser key "trainer.logger"' in err  # not the "unrecognized arguments" a replay would print


def test_a_file_named_like_the_value_changes_nothing(cached: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Only options that never read their value from a file are recorded: ``abc`` here is a word, not ``5``."""
    (tmp_path / "abc").write_text("5\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--trainer.max_epochs", "abc"]
    assert cli_cache.answer(args, PROG) == real(args, capsys)


@pytest.mark.parametrize("args", [["fit", "--trainer.max_epochs", "null"], ["fit", "--model.freeze_word_embeddings", "true"],
                                  ["fit", "--model.freeze_word_embeddings", "off"]], ids=lambda a: " ".join(a))
def test_a_word_left_to_the_real_parser_is_one_the_type_accepts(args: list[str], cached: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Why such words fall through: the type may accept them (``--print_config`` ends the parse, before any run).

    Others (``inf``, ``nan``) fall through too, only to be safe: ``float()`` reads them.
    """
    out, err, status = real([*args, "--print_config"], capsys)
    assert status == 0, err
    assert "Parser key" not in err


def test_a_changed_source_file_invalidates_the_entry(cached: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "ner_lit"
    shutil.copytree(REPO / "ner_lit", copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cli_cache, "PACKAGE", copy)
    key = cli_cache.cache_key(PROG)
    assert cli_cache.cache_key(PROG) == key  # deterministic
    assert key != cli_cache.cache_key(PROG, REPO / "ner_lit")  # the folder is part of the key
    monkeypatch.setattr(cli_cache, "PACKAGE", REPO / "ner_lit")
    assert cli_cache.answer(["fit", "--help"], PROG) is not None
    monkeypatch.setattr(cli_cache, "PACKAGE", copy)
    (copy / "training" / "model.py").write_text((copy / "training" / "model.py").read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    assert cli_cache.cache_key(PROG) != key
    assert cli_cache.source_digest(copy) != cli_cache.source_digest(REPO / "ner_lit")


def test_the_command_name_and_the_terminal_width_are_part_of_the_key(cached: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = cli_cache.cache_key(PROG)
    assert cli_cache.cache_key("python -m ner_lit") != key
    monkeypatch.setenv("COLUMNS", "57")
    assert cli_cache.cache_key(PROG) != key
    assert cli_cache.answer(["fit", "--help"], PROG) is None


def test_an_unreadable_entry_means_the_real_path_which_records_it_again(
        cached: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "93")  # an entry of this test's own
    entry = cli_cache.entry_path(cli_cache.cache_key(PROG))
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text('{"format": 1, "key": "trunc', encoding="utf-8")
    assert cli_cache.answer(["fit", "--help"], PROG) is None
    help_text = real(["fit", "--help"], capsys)
    assert cli_cache.answer(["fit", "--help"], PROG) == help_text
    entry.write_bytes(b"\xff\xfe")
    assert cli_cache.answer(["fit", "--help"], PROG) is None


@pytest.mark.parametrize("env", [{"NER_LIT_CLI_CACHE": "0"}, {"JSONARGPARSE_DEBUG": "1"}])
def test_the_cache_is_off_when_asked_or_when_jsonargparse_is_set_by_the_environment(
        env: dict[str, str], cached: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli_cache.answer(["fit", "--help"], PROG) is not None
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli_cache.answer(["fit", "--help"], PROG) is None


def test_prune_keeps_the_newest_entries(tmp_path: Path) -> None:
    for i in range(cli_cache.KEEP + 3):
        path = tmp_path / f"{i:02d}.json"
        write_text_atomic(path, "{}")
        os.utime(path, ns=(i * 10**9, i * 10**9))
    cli_cache.prune(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i:02d}.json" for i in range(3, cli_cache.KEEP + 3)]


def test_a_new_process_answers_from_the_cache_without_torch_or_lightning(tmp_path: Path) -> None:
    """End to end: the first `fit --help` takes the real path and records; the next replays it, importing nothing heavy."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NER_LIT_CACHE": str(tmp_path)}
    env.pop("NER_LIT_CLI_CACHE", None)
    probe = ("import sys\nfrom ner_lit.cli.command import main\ntry:\n    main(sys.argv[1:], prog='python -m ner_lit')\n"
             "except SystemExit as e:\n    code = e.code\n"
             "print(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules), code, file=sys.stderr)")

    def run(*args: str, module: bool = True) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "ner_lit", *args] if module else [sys.executable, "-c", probe, *args]
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    cold = run("fit", "--help")
    assert cold.returncode == 0, cold.stderr
    warm = run("fit", "--help")
    assert (warm.returncode, warm.stdout, warm.stderr) == (0, cold.stdout, cold.stderr)
    assert run("fit", "--help", module=False).stderr.splitlines()[-1] == "[] 0"
    error = run("fit", "--model.learnig_rate", "1", module=False)
    assert error.stderr.splitlines()[-2:] == ["error: unrecognized arguments: --model.learnig_rate 1", "[] 2"]
    value = run("fit", "--trainer.max_epochs", "abc", module=False)
    assert value.stderr.splitlines()[-3:] == ["  Given value type: <class 'str'>", "  Given value: abc", "[] 2"]


def test_warm_cache_records_the_answers_for_both_names_of_the_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from ner_lit.cli.command import main

    monkeypatch.setenv("NER_LIT_CACHE", str(tmp_path))
    monkeypatch.delenv("NER_LIT_CLI_CACHE", raising=False)
    assert cli_cache.answer(["fit", "--help"], "python -m ner_lit") is None
    with pytest.raises(SystemExit) as exit_:
        main(["--warm-cache"], prog="python -m ner_lit")
    out, err = capsys.readouterr()
    assert (exit_.value.code, out) == (0, "")
    assert len(list((tmp_path / "cli").glob("*.json"))) == 2
    for prog in ("ner_lit", "python -m ner_lit"):
        assert str(cli_cache.entry_path(cli_cache.cache_key(prog))) in err
        assert cli_cache.answer(["fit", "--help"], prog) is not None
    assert cli_cache.answer(["fit", "--trainer.max_epochs", "abc"], PROG) == real(["fit", "--trainer.max_epochs", "abc"], capsys)


def test_warm_cache_with_the_cache_off_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from ner_lit.cli.command import main

    monkeypatch.setenv("NER_LIT_CLI_CACHE", "0")
    with pytest.raises(SystemExit) as exit_:
        main(["--warm-cache"])
    assert exit_.value.code == 0
    assert "cache is off" in capsys.readouterr().err
