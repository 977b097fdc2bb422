"""`serve` on a run's own saved config, and a busy port refused before the model loads."""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ner_lit.serving import launch as serve_module
from ner_lit.serving.app import ServeError
from ner_lit.serving.cli import serve_arguments

from pipeline_fixtures import TrainedRun, cli_process, copy_run


def test_serve_takes_a_runs_saved_config_and_finds_its_best_checkpoint(
        trained_run: TrainedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    run = copy_run(trained_run.run_dir, root)
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    saved["trainer"]["default_root_dir"] = str(root)
    assert {"weights_only", "checkpoint", "export", "prediction_writer"} <= set(saved)  # keys serve used to refuse
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(saved), encoding="utf-8")
    captured = serve_arguments(["--config", str(config), "--ckpt_path", "best", "--port", "0"])
    assert captured["ckpt_path"] == str(run / "checkpoints" / trained_run.best.name)
    assert captured["port"] == 0
    assert f"--ckpt_path best: {captured['ckpt_path']} (run {run.name}: the highest val_F1c" in capsys.readouterr().err


def test_a_serve_config_is_still_checked_strictly(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("port: 0\nthreds: 4\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        serve_arguments(["--config", str(config), "--ckpt_path", "x.ckpt"])
    assert exit_.value.code == 2


def test_a_serve_config_sets_serves_options(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("port: 0\nthreads: 3\n", encoding="utf-8")
    captured = serve_arguments(["--config", str(config), "--ckpt_path", "x.ckpt"])
    assert (captured["port"], captured["threads"], captured["ckpt_path"]) == (0, 3, "x.ckpt")


def test_a_busy_port_fails_before_the_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded although the port is busy")

    monkeypatch.setattr(serve_module, "load_predictor", must_not_load)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeError, match=f"^cannot listen on 127.0.0.1:{port}: "):
            serve_module.serve(ckpt_path="any.ckpt", port=port)


def test_the_serve_command_reports_a_busy_port_in_one_line(trained_run: TrainedRun) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc: subprocess.CompletedProcess = cli_process(
            ["serve", "--config", str(trained_run.config), "--ckpt_path", "best", "--port", str(port)], trained_run.cache)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == [f"ner_lit: error: cannot listen on 127.0.0.1:{port}: Address already in use"], proc.stderr
    assert "Traceback" not in proc.stderr and "model:" not in proc.stdout
