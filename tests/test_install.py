"""The wheel: built, installed in a fresh venv, and the quickstart run from an empty directory.

The venv reuses the test interpreter's packages (torch, lightning ...) through a .pth line, so
nothing is downloaded; ner_lit itself comes only from the wheel (PYTHONPATH is cleared, and
the interpreter's own editable install is not seen: a .pth path line does not run the .pth
files of the folder it adds).
"""
from __future__ import annotations

import json
import os
import shutil
import site
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "ner_lit", "templates", "configs"]
NOISE = ["LeafSpec", "Tip:", "litlogger", "dirpath has changed", "Be aware that when using", "Warning", "Traceback"]
QUICK = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.enable_progress_bar", "false",
         "--model.hidden_size", "32", "--model.num_layers", "1"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(
            REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if (REPO / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(base / "dist"),
                    str(src)], check=True, capture_output=True, timeout=300)
    (found,) = (base / "dist").glob("ner_lit-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (and the test interpreter's packages visible)."""
    target = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=120)
    purelib = Path(subprocess.run([str(target / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "shared-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(target / "bin" / "python"), "install", "--no-deps",
                    "--no-build-isolation", "-q", str(wheel)], check=True, capture_output=True, timeout=300)
    return target


def env_for(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PL_", "NER_LIT_", "PYTHON"))}
    env.update({"NER_LIT_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return env


def ner_lit(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "ner_lit"), *args], cwd=cwd, env=env_for(cwd), capture_output=True,
                          text=True, timeout=300)


def test_the_wheel_carries_the_page_the_recipes_and_the_sample_corpus_byte_for_byte(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        assert z.read("ner_lit/templates/index.html") == (REPO / "templates" / "index.html").read_bytes()
        for recipe in (REPO / "configs").glob("*.yaml"):
            assert z.read(f"ner_lit/recipes/{recipe.name}") == recipe.read_bytes(), recipe.name
        for split in ("train.tsv", "dev.tsv"):
            assert z.read(f"ner_lit/sample/{split}") == (REPO / "ner_lit" / "sample" / split).read_bytes()
        entry = z.read(next(n for n in z.namelist() if n.endswith("entry_points.txt"))).decode()
    assert "ner_lit = ner_lit.cli.command:main" in entry


def test_the_installed_command_runs_from_its_own_copy_and_calls_itself_ner_lit(venv: Path, tmp_path: Path) -> None:
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import ner_lit; print(ner_lit.__file__)"], cwd=tmp_path,
                           env=env_for(tmp_path), capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv)
    proc = ner_lit(venv, tmp_path, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ner_lit [-h]")
    proc = ner_lit(venv, tmp_path, "serve", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ner_lit serve")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_quickstart_fit_test_serve_works_from_an_empty_directory(venv: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    fit = ner_lit(venv, work, "fit", "--config", "tiny", *QUICK)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = work / "runs" / "tiny" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file()

    test = ner_lit(venv, work, "test", "--config", "tiny", *QUICK, "--ckpt_path", "best")
    assert test.returncode == 0, test.stderr[-3000:]
    (report,) = (run / "test").glob("*/dev/test_report.md")
    assert "- data: " in report.read_text(encoding="utf-8") and "sample/dev.tsv" in report.read_text(encoding="utf-8")
    for noise in NOISE:
        assert noise not in fit.stderr + test.stderr, noise

    port = free_port()
    server = subprocess.Popen([str(venv / "bin" / "ner_lit"), "serve", "--config", str(run / "config.yaml"), "--ckpt_path", "best",
                               "--port", str(port), "--runtime", "eager"], cwd=work, env=env_for(work),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        page = answer = None
        for _ in range(240):
            time.sleep(0.5)
            assert server.poll() is None, server.communicate()[1][-3000:]
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                continue
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api", data=json.dumps({"text": "서울에서 만났다."}).encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert page is not None and page.encode() == (REPO / "templates" / "index.html").read_bytes()
    assert answer["text"] == "서울에서 만났다." and isinstance(answer["entities"], list)
    assert sorted(p.name for p in work.iterdir()) == ["cache", "runs"]
