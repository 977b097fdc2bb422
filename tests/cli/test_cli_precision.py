"""bf16-mixed on CPU: used where the CPU has native bf16, replaced by fp32 where it has not."""
from __future__ import annotations

from pathlib import Path

import pytest

from ner_lit.cli import lightning as cli
from ner_lit.data.datamodule import NERDataModule
from ner_lit.training.model import NERModel

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_run_version():
    """The CLI hands its run version to DDP children through the environment; don't leak it."""
    import os

    yield
    os.environ.pop(cli._VERSION_ENV, None)


def build_trainer(tmp_path: Path, precision: str):
    parsed = cli.NERCLI(
        NERModel,
        NERDataModule,
        run=False,
        auto_configure_optimizers=False,
        args=["--config", str(REPO / "configs" / "tiny.yaml"), "--trainer.precision", precision,
              "--trainer.default_root_dir", str(tmp_path), "--data.data_dir", str(REPO / "ner_lit" / "sample")],
    )
    return parsed.trainer


def test_bf16_mixed_falls_back_to_fp32_on_a_cpu_without_bf16(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "cpu_supports_bf16", lambda: False)
    trainer = build_trainer(tmp_path, "bf16-mixed")
    assert trainer.precision == "32-true"
    assert "no native bf16 support" in capsys.readouterr().err


def test_bf16_mixed_is_kept_on_a_cpu_with_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "cpu_supports_bf16", lambda: True)
    assert build_trainer(tmp_path, "bf16-mixed").precision == "bf16-mixed"


def test_fp32_is_never_changed(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "cpu_supports_bf16", lambda: False)
    assert build_trainer(tmp_path, "32-true").precision == "32-true"
