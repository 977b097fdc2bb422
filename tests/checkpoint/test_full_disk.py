"""A disk that fills up: one error line naming the file, the previous file kept, no temporary left.

A checkpoint save (a checkpoint IO plugin that fails like a full disk), ``predict``'s output and
a folder a library writes (the kernel refusing to let a file grow, ``RLIMIT_FSIZE``, which needs
no root and no mount), and the export at the end of ``fit`` (its weights writer failing as on a
full disk).
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from ner_lit.checkpoint.format import load_checkpoint
from ner_lit.corpus.klue import read_klue_tsv

from pipeline_fixtures import REPO, SAMPLE, TrainedRun, cli_env, cli_process, finish, in_this_process, tiny_config


@pytest.mark.slow  # a whole command in a new process
def test_a_full_disk_while_saving_last_ckpt_ends_fit_with_one_line_and_keeps_the_previous_last(
        trained_run: TrainedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    root = tmp_path / "runs"
    cfg = tiny_config(trained_run.data_dir, root)
    cfg["trainer"].update({"max_epochs": 2, "limit_train_batches": 2,
                           "plugins": [{"class_path": "fault_plugins.FullDiskSave",
                                        "init_args": {"prefix": "last", "occurrence": 2}}]})
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    proc = cli_process(["fit", "--config", str(tmp_path / "fit.yaml")], trained_run.cache)
    last = root / "version_0" / "checkpoints" / "last.ckpt"
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ner_lit: error:")]
    assert errors == [f"ner_lit: error: {last}: could not be written (No space left on device); "
                      "what was there before is unchanged"]
    assert "Traceback" not in proc.stderr
    assert load_checkpoint(last)["epoch"] == 0  # the first epoch's, whole
    assert sorted(p.name for p in last.parent.iterdir() if p.name.startswith(".")) == []  # no temporary left


# --------------------------------------------------------------------------- predict's output, the export
def limited_file_size(limit: int) -> Callable[[], None]:
    """For ``preexec_fn``: no file of this process may grow past ``limit`` bytes (the kernel refuses the
    write with EFBIG, as a full disk refuses with ENOSPC); SIGXFSZ ignored so that the write fails instead."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow  # a whole command in a new process
def test_predict_output_refused_by_the_system_is_one_line_and_the_old_output_stays(
        trained_run: TrainedRun, tmp_path: Path) -> None:
    texts = [s.text for s in read_klue_tsv(SAMPLE / "dev.tsv")]
    source = tmp_path / "in.txt"
    source.write_text("".join(t + "\n" for t in (texts * 4)[:2000]), encoding="utf-8")
    output = tmp_path / "out" / "predictions.jsonl"
    output.parent.mkdir()
    output.write_text("the previous predictions\n", encoding="utf-8")
    args = ["predict", *trained_run.args("--trainer.default_root_dir", str(tmp_path / "runs"), "--ckpt_path",
                                         str(trained_run.best), "--data.predict_file", str(source),
                                         "--prediction_writer.output", str(output), "--prediction_writer.overwrite", "true")]
    proc = finish(subprocess.Popen([sys.executable, "-m", "ner_lit", *args], cwd=REPO, env=cli_env(trained_run.cache),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=limited_file_size(64 * 1024)))
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ner_lit: error:")]
    assert errors == [f"ner_lit: error: {output}: could not be written (File too large); what was there before is unchanged"]
    assert "Traceback" not in proc.stderr
    assert output.read_text(encoding="utf-8") == "the previous predictions\n"
    assert sorted(p.name for p in output.parent.iterdir()) == ["predictions.jsonl"]  # no temporary left


def test_a_folder_written_by_a_library_is_whole_or_absent_when_the_system_refuses(tmp_path: Path) -> None:
    script = f"""
import sys, torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from ner_lit.files import WriteError, atomic_directory
try:
    with atomic_directory({str(tmp_path / 'model')!r}, refusals=(SafetensorError,)) as folder:
        (folder / "config.json").write_text("{{}}")
        save_file({{"w": torch.zeros(100_000)}}, str(folder / "model.safetensors"))
except WriteError as exc:
    print(exc)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          preexec_fn=limited_file_size(64 * 1024), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"{tmp_path / 'model'}: could not be written (")
    assert "File too large" in proc.stdout and proc.stdout.rstrip().endswith("what was there before is unchanged")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary


def test_fit_whose_export_finds_the_disk_full_ends_with_one_line_and_no_half_export(
        trained_run: TrainedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def full_disk(*args: Any, **kwargs: Any) -> None:  # what safetensors raises when the disk is full
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)
    root = tmp_path / "runs"
    cfg = tiny_config(trained_run.data_dir, root)
    cfg["trainer"].update({"limit_train_batches": 2})
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = in_this_process(["fit", "--config", str(tmp_path / "fit.yaml")], trained_run.cache)
    target = root / "version_0" / "hf_model"
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"ner_lit: error: {target}: could not be written (Error while serializing: I/O error: No space left on device "
        "(os error 28)); what was there before is unchanged")
    assert not target.exists()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".hf_model")]
    assert (root / "version_0" / "checkpoints" / "last.ckpt").is_file()  # the run itself is kept
