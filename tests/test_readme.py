"""The README's commands, run as written (as litgpt's test_readme.py runs its README).

Every line of every ```bash block in README.md is claimed by exactly one test below, and
``test_every_readme_command_is_run_by_a_test`` fails for a line none claims: a command added to
the README without a test, or changed so that its test no longer finds it, stops the suite.

The commands run with ``bash`` in a scratch working directory laid out like a checkout (``configs/``
and ``../shared`` linked in), with this interpreter's ``bin`` first on PATH, so ``python`` and
``ner_lit`` are the ones under test. Two changes are made, each said where it is made: servers get a
free port instead of 5000/8080 (so a busy port can not fail the suite), and the long trainings (KLUE,
multilingual-e5-small) get batch limits appended (``--trainer.limit_train_batches`` ...): the commands
themselves are unchanged, only cut short.

The tests that run commands are ``slow`` (``make test-all``, what CI runs): together they train,
test, predict and serve for a minute or more, and the fast tier's pipeline tests cover the same
code paths.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
README = REPO / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def commands() -> list[str]:
    """Every command line of the README's bash blocks, without its trailing comment."""
    out = []
    for block in blocks("bash"):
        for line in block.splitlines():
            if line.strip():
                out.append(_without_comment(line))
    return out


def _without_comment(line: str) -> str:
    """The line without a trailing ``  # comment`` (no README command has `` # `` inside it)."""
    return re.split(r"\s+# ", line, maxsplit=1)[0].strip()


def matching(pattern: str) -> list[str]:
    found = [c for c in commands() if re.search(pattern, c)]
    assert found, f"README.md has no bash command matching {pattern!r}"
    return found


CLAIMS = {
    "install": r"^python -m pip install ",
    "warm-cache": r"^python -m ner_lit --warm-cache$",
    "quickstart": r"^ner_lit (fit|test) +--config tiny",
    "quickstart-serve": r"^ner_lit serve +--config tiny",
    "klue": r"--data\.data_dir \.\./shared/data/klue-ner",
    "me5": r"pretrained-me5/build\.py|configs/me5\.yaml",
    "predict": r"^printf |^ner_lit predict |^cat runs/tiny/",
    "serve": r"^python -m ner_lit serve ",
    "curl": r"^curl ",
    "make": r"^make test(-all)?$",
}


def test_every_readme_command_is_run_by_a_test() -> None:
    unclaimed = [c for c in commands() if not any(re.search(p, c) for p in CLAIMS.values())]
    assert unclaimed == []


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory laid out like a checkout: configs/ here, the shared folder at ../shared."""
    root = tmp_path_factory.mktemp("readme")
    work = root / "checkout"
    work.mkdir()
    (work / "configs").symlink_to(REPO / "configs")
    if SHARED.exists():
        (root / "shared").symlink_to(SHARED)
    return work


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({"NER_LIT_CACHE": str(work.parent / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1"})
    return env


def run(command: str, work: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", command], cwd=work, env={**_env(work), **env}, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def quickstart(workdir: Path) -> Path:
    """The quickstart's fit and test, as written; later blocks use the run they leave."""
    for command in matching(CLAIMS["quickstart"]):
        run(command, workdir)
    return workdir / "runs" / "tiny" / "version_0"


@pytest.mark.slow
def test_the_quickstart_leaves_a_run_with_checkpoints_an_export_and_a_test_report(quickstart: Path) -> None:
    assert (quickstart / "config.yaml").is_file() and (quickstart / "checkpoints" / "last.ckpt").is_file()
    assert list((quickstart / "checkpoints").glob("epoch*.ckpt")) and (quickstart / "hf_model" / "ner_lit.json").is_file()
    reports = list((quickstart / "test").glob("*/dev/test_report.md"))
    assert len(reports) == 1 and "F1e" in reports[0].read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_predict_block_writes_one_line_per_sentence(quickstart: Path, workdir: Path) -> None:
    printed = ""
    for command in matching(CLAIMS["predict"]):
        printed = run(command, workdir).stdout
    lines = [json.loads(line) for line in printed.splitlines()]
    assert [line["text"] for line in lines] == ["김철수는 3월 5일 서울에서 삼성전자를 방문했다.", "이순신은 조선 중기의 무신이다."]
    assert all({"text", "label", "start", "end", "score"} <= set(e) for line in lines for e in line["entities"])


@pytest.mark.slow
def test_the_python_api_example_runs_and_prints_entities(quickstart: Path, workdir: Path) -> None:
    (example,) = blocks("python")
    proc = subprocess.run([sys.executable, "-c", example], cwd=workdir, env=_env(workdir), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip(), "the example printed nothing"
    assert proc.stdout.rstrip().splitlines()[-1].startswith("[(")  # the last print: (text, label, score) tuples


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _on_port(command: str, port: int) -> str:
    """The command with its port (``--port N``, or the default 5000) replaced by ``port``."""
    if "--port" in command:
        return re.sub(r"--port \d+", f"--port {port}", command)
    return f"{command} --port {port}"


def _wait_healthy(proc: subprocess.Popen, port: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited {proc.returncode}:\n{proc.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"no answer on port {port} after {timeout} s")


def _serving(command: str, work: Path, port: int):
    proc = subprocess.Popen(["bash", "-c", f"exec {_on_port(command, port)}"], cwd=work, env=_env(work),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
def test_every_serve_command_serves_and_the_curl_commands_get_answers(quickstart: Path, workdir: Path) -> None:
    servers = matching(CLAIMS["quickstart-serve"]) + matching(CLAIMS["serve"])
    for command in servers:
        port = _free_port()
        proc = _serving(command, workdir, port)
        try:
            assert _wait_healthy(proc, port)
            if command == servers[0]:  # the API calls, against the quickstart's server
                answers = [json.loads(run(c.replace("127.0.0.1:5000", f"127.0.0.1:{port}"), workdir).stdout)
                           for c in matching(CLAIMS["curl"])]
                assert answers[0]["text"].startswith("김철수는") and isinstance(answers[0]["entities"], list)
                assert [a["text"] for a in answers[1]["results"]] == ["서울", "부산"]
                assert answers[2]
        finally:
            _stop(proc)


@pytest.mark.slow
def test_the_warm_cache_command_records_the_parser_answers(workdir: Path) -> None:
    run(matching(CLAIMS["warm-cache"])[0], workdir)
    assert list((workdir.parent / "cache" / "cli").glob("*.json"))


def _makefile_recipe(target: str) -> list[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, flags=re.M)
    assert match, f"the Makefile has no {target} target"
    return [line.strip().replace("$(PYTHON)", "python") for line in match.group(1).splitlines()]


def test_the_install_commands_are_what_make_install_and_ci_run() -> None:
    installs = matching(CLAIMS["install"]) + matching(CLAIMS["warm-cache"])
    assert _makefile_recipe("install") == installs
    assert re.search(r"^make install\b", (REPO / ".ci" / "run").read_text(encoding="utf-8"), flags=re.M)


def test_make_test_is_the_fast_tier_and_ci_runs_make_test_all() -> None:
    assert matching(CLAIMS["make"]) == ["make test", "make test-all"]
    (fast,) = _makefile_recipe("test")
    (full,) = _makefile_recipe("test-all")
    assert fast == "python -m pytest -q -m 'not slow'" and full == "python -m pytest -q --durations=20"
    assert re.search(r"^make test-all\b", (REPO / ".ci" / "run").read_text(encoding="utf-8"), flags=re.M)


@pytest.mark.slow
def test_the_klue_command_trains_on_the_shared_files(workdir: Path) -> None:
    if not SHARED.exists():
        pytest.skip("../shared is absent (fresh clone outside the project workplace)")
    (command,) = matching(CLAIMS["klue"])
    run(command + " --trainer.limit_train_batches 2 --trainer.limit_val_batches 2 --trainer.default_root_dir runs/klue-readme",
        workdir)
    assert list((workdir / "runs" / "klue-readme" / "version_0" / "checkpoints").glob("epoch*.ckpt"))  # the best, scored


@pytest.mark.slow
def test_the_pretrained_encoder_block_builds_trains_and_tests(workdir: Path) -> None:
    if not SHARED.exists():
        pytest.skip("../shared is absent (fresh clone outside the project workplace)")
    build, fit, test = matching(CLAIMS["me5"])
    run(build, workdir, XDG_CACHE_HOME=str(REPO / "test-artifacts"))  # the wheels the other me5 tests downloaded
    assert (workdir / "models" / "me5" / "model.safetensors").is_file()
    run(fit + " --trainer.limit_train_batches 2 --trainer.limit_val_batches 1 --trainer.max_epochs 1", workdir, timeout=900)
    proc = run(test + " --trainer.limit_test_batches 1", workdir, timeout=900)
    assert "F1e" in proc.stdout + proc.stderr
