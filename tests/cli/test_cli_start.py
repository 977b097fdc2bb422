"""The command's front: --help and usage errors without Lightning, the command's name, recipes by name."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ner_lit.cli import command as command
from ner_lit.resources import config_file, package_path, recipes

REPO = Path(__file__).resolve().parents[2]


def run_module(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ner_lit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def heavy_modules_after(args: list[str]) -> set[str]:
    """Which of torch/lightning/transformers a new process has imported after answering ``args``."""
    code = ("import sys\nfrom ner_lit.cli.command import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    return set(eval(proc.stdout.strip().splitlines()[-1]))


def test_help_says_python_dash_m_when_run_as_a_module_and_lists_every_subcommand() -> None:
    from lightning.pytorch.cli import LightningCLI

    proc = run_module("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m ner_lit [-h] {fit,validate,test,predict,serve} ...")
    assert set(command.SUBCOMMANDS) == {*LightningCLI.subcommands(), "serve"}
    for name in command.SUBCOMMANDS:
        assert f"\n  {name} " in proc.stdout


def test_help_of_the_installed_command_says_ner_lit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        command.main(["--help"])  # what the `ner_lit` entry point runs
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ner_lit [-h]")


@pytest.mark.parametrize("args", [["--help"], [], ["fti"], ["fit", "--config", "no-such-recipe"], ["serve", "--help"]],
                         ids=["help", "nothing", "unknown subcommand", "unknown recipe", "serve help"])
def test_help_and_usage_errors_import_no_torch_or_lightning(args: list[str]) -> None:
    assert heavy_modules_after(args) == set()


def test_an_unknown_subcommand_is_one_error_line_and_status_2() -> None:
    proc = run_module("fti")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == ["ner_lit: error: unknown subcommand 'fti'; choose one of fit, validate, test, predict, serve"]


def test_a_config_that_is_neither_a_file_nor_a_recipe_names_both_places(tmp_path: Path) -> None:
    proc = run_module("fit", "--config", "tinyy", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"ner_lit: error: --config tinyy: no such file in {tmp_path}, and not a shipped recipe "
                                   f"({', '.join(recipes())})")


def test_recipes_are_the_configs_of_the_source_tree() -> None:
    assert recipes()["tiny"].read_bytes() == (REPO / "configs" / "tiny.yaml").read_bytes()
    assert set(recipes()) == {p.stem for p in (REPO / "configs").glob("*.yaml")}


def test_config_by_name_is_the_recipe_unless_a_file_of_that_name_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_file("tiny") == str(recipes()["tiny"])
    assert config_file("tiny.yaml") == str(recipes()["tiny"])
    assert config_file("ner_lit:recipes/tiny.yaml") == str(recipes()["tiny"])
    (tmp_path / "tiny.yaml").write_text("seed_everything: 1\n", encoding="utf-8")
    assert config_file("tiny.yaml") == "tiny.yaml"  # the user's own file wins
    assert config_file("configs/tiny.yaml") == "configs/tiny.yaml"  # a path is never a recipe name


def test_expand_configs_rewrites_both_spellings_and_nothing_else() -> None:
    tiny = str(recipes()["tiny"])
    assert command.expand_configs(["fit", "--config", "tiny", "--config=tiny", "--data.data_dir", "tiny"]) == \
        ["fit", "--config", tiny, f"--config={tiny}", "--data.data_dir", "tiny"]


def test_package_paths_reach_the_sample_corpus_and_the_page() -> None:
    assert (package_path("sample") / "train.tsv").is_file()
    assert package_path("templates/index.html").read_bytes() == (REPO / "templates" / "index.html").read_bytes()
