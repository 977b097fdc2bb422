"""TaggerSpec: one typed record of a trained tagger, the same from the data, a checkpoint and an export."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ner_lit.checkpoint.format import CheckpointError, spec_of
from ner_lit.checkpoint.spec import DEFAULT_CHAR_SLOTS, FORMAT, SECTION, SPEC_FILE, SpecError, TaggerSpec
from ner_lit.training.model import NERModel

from pipeline_fixtures import MAX_LENGTH, STRIDE, TrainedRun

LABELS = ("O", "B-PS", "I-PS")
FILES = {"vocab.txt": "[PAD]\n[UNK]\n", "tokenizer_config.json": "{}"}


def spec(**changes) -> TaggerSpec:
    return TaggerSpec(LABELS, FILES, 128, 32, **changes)


# --------------------------------------------------------------------------- the record
def test_a_spec_survives_its_dict_round_trip_unchanged() -> None:
    original = spec(model_config={"model_type": "bert", "num_labels": 3}, name="x", scores={"val_F1c": 90.5})
    record = json.loads(json.dumps(original.to_dict()))  # plain values only: what torch.load(weights_only) reads
    assert TaggerSpec.from_dict(record, "f") == original


def test_a_spec_is_frozen() -> None:
    with pytest.raises(AttributeError):
        spec().max_length = 64  # type: ignore[misc]


@pytest.mark.parametrize("fmt, message", [
    (FORMAT + 1, f"written by a newer ner_lit (format {FORMAT + 1}; this version reads format {FORMAT} and older)"),
    (0, "no valid format number (got 0)"),
    ("2", "no valid format number (got '2')"),
    (None, "no valid format number (got None)"),
])
def test_an_unknown_format_is_refused_naming_the_file(fmt, message) -> None:
    with pytest.raises(SpecError, match="^run.ckpt: " + ".*" + message.replace("(", r"\(").replace(")", r"\)")):
        TaggerSpec.from_dict({**spec().to_dict(), "format": fmt}, "run.ckpt")


def test_a_format_1_record_without_provenance_still_reads() -> None:
    record = spec().to_dict()
    record.pop("provenance")
    record["format"] = 1
    assert TaggerSpec.from_dict(record, "old.ckpt").provenance.created == ""


@pytest.mark.parametrize("changes, message", [
    ({"labels": []}, "has no label list"),
    ({"labels": ["O", "O"]}, "repeats a label"),
    ({"tokenizer_files": {}}, "holds no tokenizer files"),
    ({"stride": 128}, "stride 128, expected 0 <= stride < max_length"),
    ({"decoding": "beam"}, "decoding 'beam'"),
    ({"label_rule": "last_char"}, "label_rule 'last_char'"),
    ({"model_config": {"model_type": "bert", "num_labels": 5}}, "need 3 outputs but its model config has 5"),
    ({"tagging": "char", "char_slots": 4, "model_config": {"model_type": "bert", "num_labels": 3}},
     r"need 12 outputs \(4 character slots x 3 labels\) but its model config has 3"),
    ({"tagging": "word"}, "tagging 'word'"),
    ({"tagging": "char", "char_slots": 0}, "char_slots 0, expected a whole number of at least 1"),
])
def test_an_inconsistent_record_is_refused_naming_the_file(changes, message) -> None:
    with pytest.raises(SpecError, match=f"^x.ckpt: .*{message}"):
        TaggerSpec.from_dict({**spec().to_dict(), **changes}, "x.ckpt")


def test_a_record_missing_a_field_names_what_it_lacks() -> None:
    record = spec().to_dict()
    del record["max_length"], record["stride"]
    with pytest.raises(SpecError, match="^x.ckpt: its tagger record lacks max_length, stride$"):
        TaggerSpec.from_dict(record, "x.ckpt")


# --------------------------------------------------------------------------- what training writes
def test_the_checkpoint_carries_the_spec_the_data_module_made(trained_run: TrainedRun) -> None:
    got = spec_of(trained_run.best)
    assert (got.max_length, got.stride, got.label_rule, got.decoding) == (MAX_LENGTH, STRIDE, "first_char", "viterbi")
    assert (got.tagging, got.char_slots) == ("char", DEFAULT_CHAR_SLOTS)
    assert got.model_config is not None and len(got.model_config["id2label"]) == got.char_slots * len(got.labels)
    assert got.name == "scratch-bert" and got.crf is None
    assert got.format == 3  # no CRF: the layout the versions before CRF heads read


def test_the_spec_records_where_the_tagger_came_from(trained_run: TrainedRun) -> None:
    from ner_lit import __version__

    prov = spec_of(trained_run.best).provenance
    train = trained_run.data_dir / "train.tsv"
    assert prov.ner_lit_version == __version__ and prov.pretrained is None
    assert Path(prov.train_file).resolve() == train.resolve()
    assert prov.train_sha256 == hashlib.sha256(train.read_bytes()).hexdigest()
    assert prov.created.endswith("+00:00")


def test_the_exported_directory_carries_the_checkpoints_spec(trained_run: TrainedRun) -> None:
    exported = trained_run.run_dir / "hf_model"
    assert (exported / SPEC_FILE).is_file()
    assert TaggerSpec.from_model_dir(exported) == replace(spec_of(trained_run.best),
                                                          tokenizer_files=TaggerSpec.from_model_dir(exported).tokenizer_files,
                                                          model_config=TaggerSpec.from_model_dir(exported).model_config)
    record = json.loads((exported / SPEC_FILE).read_text(encoding="utf-8"))
    assert record["model_config"] == "config.json"  # not repeated: the directory holds it
    assert set(record["tokenizer_files"]) <= {p.name for p in exported.iterdir()}


def test_an_exported_spec_rebuilds_the_same_tokenizer(trained_run: TrainedRun, tmp_path) -> None:
    exported = TaggerSpec.from_model_dir(trained_run.run_dir / "hf_model")
    text = "서울에서 왔다 1994년"
    assert exported.tokenizer(tmp_path)(text)["input_ids"] == spec_of(trained_run.best).tokenizer(tmp_path)(text)["input_ids"]


def test_a_plain_hugging_face_directory_gets_an_inferred_spec(trained_run: TrainedRun, tmp_path) -> None:
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(trained_run.run_dir / "hf_model", plain)
    (plain / SPEC_FILE).unlink()
    inferred = TaggerSpec.from_model_dir(plain)
    assert inferred.labels == spec_of(trained_run.best).labels
    assert (inferred.tagging, inferred.char_slots) == ("char", DEFAULT_CHAR_SLOTS)  # read off the outputs' names
    assert (inferred.max_length, inferred.stride, inferred.scores) == (512, 64, {})
    assert "settings inferred" in inferred.name


def test_an_exported_spec_of_a_newer_format_is_refused(trained_run: TrainedRun, tmp_path) -> None:
    import shutil

    newer = tmp_path / "newer"
    shutil.copytree(trained_run.run_dir / "hf_model", newer)
    record = json.loads((newer / SPEC_FILE).read_text(encoding="utf-8"))
    (newer / SPEC_FILE).write_text(json.dumps({**record, "format": FORMAT + 5}), encoding="utf-8")
    with pytest.raises(SpecError, match=f"{SPEC_FILE}: written by a newer ner_lit"):
        TaggerSpec.from_model_dir(newer)


# --------------------------------------------------------------------------- load_from_checkpoint
def test_load_from_checkpoint_needs_no_trainer_and_no_data(trained_run: TrainedRun) -> None:
    model = NERModel.load_from_checkpoint(trained_run.best, map_location="cpu")
    ckpt = torch.load(trained_run.best, map_location="cpu", weights_only=True)
    assert model.spec == spec_of(trained_run.best) and model.labels == list(model.spec.labels)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ckpt["state_dict"][name]), name


def test_a_loaded_model_tags_text_as_its_checkpoint_does(trained_run: TrainedRun) -> None:
    """Its tokenizer and windows come from the spec: the logits match the checkpoint's own predictor's."""
    from ner_lit.corpus.records import Sentence
    from ner_lit.inference.predictor import Predictor

    model = NERModel.load_from_checkpoint(trained_run.best, map_location="cpu").eval()
    predictor = Predictor.from_checkpoint(trained_run.best)
    text = "이순신은 조선 중기의 무신이다. " * 4  # longer than one window
    (encoded,) = model.aligner.encode([Sentence("0", text)], with_labels=False)
    assert len(encoded.windows) > 1
    assert (model.aligner.max_length, model.aligner.stride) == (MAX_LENGTH, STRIDE)
    from ner_lit.alignment.collate import pad_windows

    batch = pad_windows(encoded.windows, model.tokenizer.pad_token_id or 0)
    with torch.no_grad():
        ours = model(batch["input_ids"], batch["attention_mask"]).logits
        theirs = predictor.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_load_from_checkpoint_refuses_damaged_weights(trained_run: TrainedRun, tmp_path) -> None:
    ckpt = torch.load(trained_run.best, map_location="cpu", weights_only=True)
    name = next(k for k in ckpt["state_dict"] if k.startswith("model."))
    ckpt["state_dict"][name] = ckpt["state_dict"][name].clone()
    ckpt["state_dict"][name].view(-1)[0] += 1
    torch.save(ckpt, tmp_path / "damaged.ckpt")
    with pytest.raises(CheckpointError, match="do not match the digest"):
        NERModel.load_from_checkpoint(tmp_path / "damaged.ckpt", map_location="cpu")


def test_load_from_checkpoint_refuses_a_newer_format(trained_run: TrainedRun, tmp_path) -> None:
    ckpt = torch.load(trained_run.best, map_location="cpu", weights_only=True)
    ckpt[SECTION]["format"] = FORMAT + 1
    torch.save(ckpt, tmp_path / "newer.ckpt")
    with pytest.raises(CheckpointError, match="written by a newer ner_lit"):
        NERModel.load_from_checkpoint(tmp_path / "newer.ckpt", map_location="cpu")
