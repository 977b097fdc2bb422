"""The best model's export at the end of ``fit``: built on the trained module's own tensors when the best
checkpoint holds them (no second copy of the network in memory), else loaded from the file; the same
directory either way."""
from __future__ import annotations

import filecmp
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ner_lit.inference.loading
from ner_lit.checkpoint.format import spec_of
from ner_lit.inference.loading import from_checkpoint_on
from ner_lit.training.callbacks import ExportBestModel
from ner_lit.training.model import NERModel

from pipeline_fixtures import TrainedRun


def _module(best: Path) -> NERModel:
    return NERModel.load_from_checkpoint(str(best), map_location="cpu", weights_only=True)


def _export(best: Path, module: NERModel, log_dir: Path) -> Path:
    trainer = SimpleNamespace(checkpoint_callback=SimpleNamespace(best_model_path=str(best)), log_dir=str(log_dir),
                              is_global_zero=True)
    callback = ExportBestModel()
    callback.on_fit_end(trainer, module)
    assert callback.exported == log_dir / "hf_model"
    return callback.exported


def _same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert (mismatch, errors) == ([], []), mismatch


def test_the_tagger_on_the_module_shares_its_tensors_and_tokenizer(trained_run: TrainedRun) -> None:
    module = _module(trained_run.best)
    mode = module.training
    loaded = from_checkpoint_on(trained_run.best, module)
    assert loaded is not None
    own = {k[len("model."):]: v for k, v in module.state_dict().items() if k.startswith("model.")}
    theirs = loaded.model.state_dict()
    assert set(theirs) <= set(own) and len(theirs) > 5
    for name, tensor in theirs.items():  # the very storage of the module's weights: no second copy
        assert tensor.data_ptr() == own[name].data_ptr(), name
    assert loaded.tokenizer is module.tokenizer
    assert loaded.spec == spec_of(trained_run.best)
    assert not loaded.model.training and module.training == mode  # the module itself is left as it was


def test_weights_that_moved_on_since_the_best_file_are_not_exported(trained_run: TrainedRun) -> None:
    module = _module(trained_run.best)
    with torch.no_grad():
        module.model.classifier.bias.add_(1.0)
    assert from_checkpoint_on(trained_run.best, module) is None


def test_the_export_from_the_module_reads_no_checkpoint_and_writes_the_files_loading_does(
        trained_run: TrainedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _module(trained_run.best)
    with monkeypatch.context() as m:
        m.setattr(ner_lit.inference.loading, "from_checkpoint_on", lambda path, mod: None)  # the old way: load the file
        loaded_way = _export(trained_run.best, module, tmp_path / "loaded")

    def refuse(path):
        raise AssertionError("the best checkpoint was loaded beside the trained module")

    monkeypatch.setattr(ner_lit.inference.loading, "from_checkpoint", refuse)
    module_way = _export(trained_run.best, module, tmp_path / "module")
    _same_files(loaded_way, module_way)


def test_an_export_after_the_weights_moved_on_holds_the_best_files_weights(
        trained_run: TrainedRun, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    module = _module(trained_run.best)
    best_bias = module.model.classifier.bias.detach().clone()
    with torch.no_grad():
        module.model.classifier.bias.add_(1.0)
    exported = _export(trained_run.best, module, tmp_path)
    weights = load_file(str(exported / "model.safetensors"))
    assert torch.equal(weights["classifier.bias"], best_bias)
    _same_files(exported, trained_run.run_dir / "hf_model")
