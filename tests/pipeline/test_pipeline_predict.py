"""`predict` (plain text, KLUE TSV, JSONL -> JSONL), streamed, its refusals, and the exported Hugging Face directory.

The session's tiny model (tests/pipeline_fixtures.py) predicts the 21 dev sentences; after
one epoch it already tags some characters as entities, which the comparisons below rely on
(checked by ``test_tiny_model_predicts_entities``).
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import transformers
from transformers import AutoModelForTokenClassification

from ner_lit.corpus.jsonl import write_jsonl
from ner_lit.corpus.klue import read_klue_tsv
from ner_lit.corpus.records import Sentence
from ner_lit.inference.predictor import Predictor
from ner_lit.training.callbacks import PredictionWriter

from pipeline_fixtures import MAX_LENGTH, STRIDE, TrainedRun, cli, finish, start_cli_process

FORMATS = ("txt", "tsv", "jsonl")


def write_inputs(run: TrainedRun, directory: Path) -> dict[str, Path]:
    """The dev sentences as plain text, KLUE TSV and JSONL."""
    sentences = read_klue_tsv(run.data_dir / "dev.tsv")
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"txt": directory / "dev.txt", "tsv": directory / "dev.tsv", "jsonl": directory / "dev.jsonl"}
    paths["txt"].write_text("".join(s.text + "\n" for s in sentences), encoding="utf-8")
    paths["tsv"].write_bytes((run.data_dir / "dev.tsv").read_bytes())
    write_jsonl(sentences, paths["jsonl"])
    return paths


def predict(run: TrainedRun, source: Path, output: Path, root: Path, *extra: str) -> None:
    cli(["predict", *run.args("--trainer.default_root_dir", str(root), "--ckpt_path", str(run.best),
                              "--data.predict_file", str(source), "--prediction_writer.output", str(output), *extra)],
        run.cache)


def read_jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def inputs(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_inputs(trained_run, tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def predictions(trained_run: TrainedRun, inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """The predict command's JSONL rows for each input format."""
    out = tmp_path_factory.mktemp("predictions")
    rows = {}
    for fmt, source in inputs.items():
        predict(trained_run, source, out / f"{fmt}.jsonl", out / "runs")
        rows[fmt] = read_jsonl_rows(out / f"{fmt}.jsonl")
    return rows


@pytest.fixture(scope="module")
def texts(trained_run: TrainedRun) -> list[str]:
    return [s.text for s in read_klue_tsv(trained_run.data_dir / "dev.tsv")]


def entity_key(e: dict) -> tuple:
    return (e["label"], e["start"], e["end"], e["text"])


# --------------------------------------------------------------------------- the predict command
def test_tiny_model_predicts_entities(predictions: dict[str, list[dict]]) -> None:
    assert sum(len(row["entities"]) for row in predictions["tsv"]) >= 5


@pytest.mark.parametrize("fmt", FORMATS)
def test_predict_writes_one_row_per_input_sentence_in_order(
        fmt: str, predictions: dict[str, list[dict]], texts: list[str], trained_run: TrainedRun) -> None:
    rows = predictions[fmt]
    assert [row["text"] for row in rows] == texts
    if fmt == "txt":
        assert [row["id"] for row in rows] == [f"dev-{i}" for i in range(1, len(texts) + 1)]
    else:
        assert [row["id"] for row in rows] == [s.id for s in read_klue_tsv(trained_run.data_dir / "dev.tsv")]
    for row in rows:
        assert set(row) == {"id", "text", "entities"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_predicted_entities_are_spans_of_the_input_text(fmt: str, predictions: dict[str, list[dict]]) -> None:
    types = {"DT", "LC", "OG", "PS", "QT", "TI"}
    for row in predictions[fmt]:
        end = 0
        for e in row["entities"]:
            assert set(e) == {"label", "start", "end", "text", "score"}
            assert e["label"] in types
            assert end <= e["start"] < e["end"] <= len(row["text"])  # sorted, not overlapping
            assert e["text"] == row["text"][e["start"]:e["end"]]
            assert 0.0 < e["score"] <= 1.0
            end = e["end"]


def test_predict_gives_the_same_entities_for_every_input_format(predictions: dict[str, list[dict]]) -> None:
    assert predictions["txt"] != []
    for fmt in ("tsv", "jsonl"):
        assert [row["entities"] for row in predictions[fmt]] == [row["entities"] for row in predictions["txt"]]


def test_predict_refuses_to_overwrite_its_input(trained_run: TrainedRun, inputs: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(inputs["txt"].read_bytes())
    with pytest.raises(SystemExit) as exit_:
        predict(trained_run, source, source, tmp_path / "runs", "--prediction_writer.overwrite", "true")
    assert exit_.value.code == 2
    assert "would overwrite its input" in capsys.readouterr().err
    assert source.read_bytes() == inputs["txt"].read_bytes()


def test_predict_refuses_an_existing_output_without_overwrite(trained_run: TrainedRun, inputs: dict[str, Path],
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text("keep me\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        predict(trained_run, inputs["txt"], output, tmp_path / "runs")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"{output} exists" in err and "--prediction_writer.overwrite true" in err
    assert output.read_text(encoding="utf-8") == "keep me\n"


def test_predict_replaces_an_existing_output_with_overwrite(trained_run: TrainedRun, inputs: dict[str, Path],
                                                           predictions: dict[str, list[dict]], tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text("old\n", encoding="utf-8")
    predict(trained_run, inputs["txt"], output, tmp_path / "runs", "--prediction_writer.overwrite", "true")
    assert read_jsonl_rows(output) == predictions["txt"]


def test_predictor_from_checkpoint_windows_text_like_training(trained_run: TrainedRun, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NER_LIT_CACHE", str(trained_run.cache))
    predictor = Predictor.from_checkpoint(trained_run.best)
    assert (predictor.aligner.max_length, predictor.aligner.stride) == (MAX_LENGTH, STRIDE)


def test_predictor_from_checkpoint_gives_the_predict_commands_entities(
        trained_run: TrainedRun, predictions: dict[str, list[dict]], texts: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NER_LIT_CACHE", str(trained_run.cache))
    predictor = Predictor.from_checkpoint(trained_run.best)
    for row, pred in zip(predictions["txt"], predictor.predict(texts), strict=True):
        assert [entity_key(e) for e in row["entities"]] == [entity_key(vars(e)) for e in pred.entities], row["text"]
        assert [e["score"] for e in row["entities"]] == pytest.approx([e.score for e in pred.entities], abs=1e-5)


# --------------------------------------------------------------------------- streaming
def write_stream_input(run: TrainedRun, path: Path) -> list[str]:
    """The dev sentences, a blank line, and one long sentence (six dev sentences joined: many windows)."""
    texts = [s.text for s in read_klue_tsv(run.data_dir / "dev.tsv")]
    long = " ".join(texts[:6])
    lines = texts[:10] + [""] + [long] + texts[10:]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return texts[:10] + [long] + texts[10:]


@pytest.fixture(scope="module")
def streamed(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same input predicted with chunks of 1, 4 and 4096 sentences (one chunk)."""
    out = tmp_path_factory.mktemp("streamed")
    source = out / "in.txt"
    write_stream_input(trained_run, source)
    outputs = {"source": source}
    for chunk in (1, 4, 4096):
        outputs[str(chunk)] = out / f"chunk{chunk}.jsonl"
        predict(trained_run, source, outputs[str(chunk)], out / "runs", "--data.predict_chunk_size", str(chunk))
    return outputs


def test_the_stream_input_has_a_sentence_of_many_windows(trained_run: TrainedRun, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NER_LIT_CACHE", str(trained_run.cache))
    texts = write_stream_input(trained_run, tmp_path / "in.txt")
    encoded = Predictor.from_checkpoint(trained_run.best).aligner.encode([Sentence("long", texts[10])], with_labels=False)
    assert len(encoded[0].windows) >= 4


def test_streamed_output_does_not_depend_on_the_chunk_size(streamed: dict[str, Path]) -> None:
    """The same lines, ids, texts and entities whatever the chunk; a score may differ in its last
    printed digit, since a chunk size changes which sentences share a forward pass (float sums)."""
    def split(path: Path) -> tuple[list[dict], list[float]]:
        rows = read_jsonl_rows(path)
        scores = [e.pop("score") for row in rows for e in row["entities"]]
        return rows, scores

    one, one_scores = split(streamed["1"])
    assert len(one) > 10 and one_scores
    for chunk in ("4", "4096"):
        rows, scores = split(streamed[chunk])
        assert rows == one, chunk
        assert scores == pytest.approx(one_scores, abs=2e-6), chunk


def test_streamed_output_keeps_input_order_and_line_ids(trained_run: TrainedRun, streamed: dict[str, Path]) -> None:
    rows = read_jsonl_rows(streamed["4"])
    texts = write_stream_input(trained_run, streamed["source"].with_name("again.txt"))
    assert [row["text"] for row in rows] == texts
    assert [row["id"] for row in rows] == [f"in-{n}" for n in [*range(1, 11), 12, *range(13, 24)]]


def test_streamed_output_gives_the_whole_input_predictors_entities(
        trained_run: TrainedRun, streamed: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamed, chunk by chunk, as one list of all sentences at once (the Predictor) gives them."""
    monkeypatch.setenv("NER_LIT_CACHE", str(trained_run.cache))
    rows = read_jsonl_rows(streamed["1"])
    preds = Predictor.from_checkpoint(trained_run.best).predict([row["text"] for row in rows])
    assert sum(len(row["entities"]) for row in rows) >= 5
    for row, pred in zip(rows, preds, strict=True):
        assert [entity_key(e) for e in row["entities"]] == [entity_key(vars(e)) for e in pred.entities], row["text"]
        assert [e["score"] for e in row["entities"]] == pytest.approx([e.score for e in pred.entities], abs=1e-5)


def test_the_writer_holds_at_most_a_chunk_and_predict_keeps_no_predictions(
        trained_run: TrainedRun, inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int, int]] = []
    original = PredictionWriter.on_predict_end

    def record(self, trainer, pl_module) -> None:
        seen.append((self.max_pending, len(trainer.predict_loop.predictions), trainer.datamodule.predict_count))
        original(self, trainer, pl_module)

    monkeypatch.setattr(PredictionWriter, "on_predict_end", record)
    big = tmp_path / "big.txt"
    big.write_text(inputs["txt"].read_text(encoding="utf-8") * 5, encoding="utf-8")  # 105 sentences
    predict(trained_run, big, tmp_path / "out.jsonl", tmp_path / "runs", "--data.predict_chunk_size", "8")
    (max_pending, kept, total), = seen
    assert total == 105
    assert 0 < max_pending <= 8
    assert kept == 0
    assert len(read_jsonl_rows(tmp_path / "out.jsonl")) == 105


def test_predict_shows_sentences_per_second_against_the_known_total(
        trained_run: TrainedRun, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    predict(trained_run, inputs["txt"], tmp_path / "out.jsonl", tmp_path / "runs", "--trainer.enable_progress_bar", "true")
    err = capsys.readouterr().err
    assert "21/21" in err and "sentences/s" in err


# --------------------------------------------------------------------------- output errors, found before predicting
def unwritable_dir(tmp_path: Path) -> Path:
    """A folder no file can be created in: read-only for a non-root user; /proc (no new files even for root) otherwise."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return folder
    (folder / "probe").unlink()
    return Path("/proc")


def refused_before_predicting(run: TrainedRun, source: Path, output: Path, root: Path,
                              capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Run predict with an output that can not be written: exit 2, one error line, the model never run."""
    from ner_lit.training.model import NERModel

    def fail(*args, **kwargs):
        raise AssertionError("predict_step ran although the output can not be written")

    monkeypatch.setattr(NERModel, "predict_step", fail)
    with pytest.raises(SystemExit) as exit_:
        predict(run, source, output, root)
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ner_lit: error:")]
    assert len(errors) == 1
    return errors[0]


def test_predict_refuses_an_output_that_is_a_directory_before_predicting(
        trained_run: TrainedRun, inputs: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    output = tmp_path / "out"
    output.mkdir()
    error = refused_before_predicting(trained_run, inputs["txt"], output, tmp_path / "runs", capsys, monkeypatch)
    assert f"{output}: is a directory" in error
    assert os.listdir(output) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no run folder either


def test_predict_refuses_an_output_under_a_regular_file_before_predicting(
        trained_run: TrainedRun, inputs: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("keep\n", encoding="utf-8")
    output = tmp_path / "file" / "out.jsonl"
    error = refused_before_predicting(trained_run, inputs["txt"], output, tmp_path / "runs", capsys, monkeypatch)
    assert str(output) in error and "can not be created" in error
    assert (tmp_path / "file").read_text(encoding="utf-8") == "keep\n"


def test_predict_refuses_an_output_in_a_read_only_folder_before_predicting(
        trained_run: TrainedRun, inputs: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    folder = unwritable_dir(tmp_path)
    output = folder / "ner-lit-out.jsonl"
    error = refused_before_predicting(trained_run, inputs["txt"], output, tmp_path / "runs", capsys, monkeypatch)
    assert f"{output}: can not write in {folder}" in error
    # /proc's own listing changes with every process: only what predict could have left is compared
    assert [name for name in os.listdir(folder) if "ner-lit-out" in name] == []


def test_a_bad_line_found_while_streaming_leaves_no_output(trained_run: TrainedRun, inputs: dict[str, Path],
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.jsonl"
    lines = inputs["jsonl"].read_text(encoding="utf-8").splitlines()
    source.write_text("\n".join(lines[:15] + ["{not json"] + lines[15:]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SystemExit) as exit_:
        predict(trained_run, source, out / "p.jsonl", tmp_path / "runs", "--data.predict_chunk_size", "4")
    assert exit_.value.code == 2
    assert f"{source}:16: invalid JSON" in capsys.readouterr().err
    assert os.listdir(out) == []


# --------------------------------------------------------------------------- the exported Hugging Face directory
@pytest.fixture(scope="module")
def hf_dir(trained_run: TrainedRun) -> Path:
    return trained_run.run_dir / "hf_model"


@pytest.fixture(scope="module")
def token_hf_dir(token_run: TrainedRun) -> Path:
    """A token tagger's export: the pipeline reads its outputs as tags (a char tagger's are per character slot)."""
    return token_run.run_dir / "hf_model"


@pytest.mark.parametrize("which", ["char", "token"])
def test_exported_dir_loads_with_automodel_and_names_its_outputs(trained_run: TrainedRun, token_run: TrainedRun,
                                                                 which: str) -> None:
    import torch

    run = trained_run if which == "char" else token_run
    model = AutoModelForTokenClassification.from_pretrained(run.run_dir / "hf_model")
    section = torch.load(run.best, map_location="cpu", weights_only=True)["ner_lit"]
    labels = section["labels"]
    want = labels if which == "token" else [f"{lab}@{k}" for k in range(section["char_slots"]) for lab in labels]
    assert [model.config.id2label[i] for i in range(model.config.num_labels)] == want


def test_pipeline_without_aggregation_gives_the_predictor_token_labels(token_hf_dir: Path, texts: list[str]) -> None:
    hf_dir = token_hf_dir
    tagger = transformers.pipeline("token-classification", model=str(hf_dir), aggregation_strategy="none",
                                   ignore_labels=[], device="cpu")
    # The pipeline tags each token on its own: ner_lit's argmax decoding (its default, viterbi,
    # may change a token's tag to keep the sequence valid IOB2), over the whole text at once as
    # the pipeline runs it (the directory's own windows, the run's 32 tokens, would split it).
    predictor = Predictor.from_pretrained(hf_dir, decoding="argmax", max_length=512)
    non_o = 0
    for text, tokens, pred in zip(texts, tagger(texts), predictor.predict(texts), strict=True):
        assert [t["entity"] for t in tokens] == [t.label for t in pred.tokens], text
        non_o += sum(t.label != "O" for t in pred.tokens)
    assert non_o > 0


def test_pipeline_with_simple_aggregation_groups_the_tagged_tokens(token_hf_dir: Path, texts: list[str]) -> None:
    hf_dir = token_hf_dir
    simple = transformers.pipeline("token-classification", model=str(hf_dir), aggregation_strategy="simple", device="cpu")
    none = transformers.pipeline("token-classification", model=str(hf_dir), aggregation_strategy="none", device="cpu")
    groups_seen = 0
    for text, groups, tokens in zip(texts, simple(texts), none(texts), strict=True):
        for g in groups:
            assert 0 <= g["start"] < g["end"] <= len(text)
        # Every token tagged B-X or I-X lies in a group of type X.
        for t in tokens:
            assert any(g["start"] <= t["start"] and t["end"] <= g["end"] and g["entity_group"] == t["entity"][2:]
                       for g in groups), (text, t)
        groups_seen += len(groups)
    assert groups_seen > 0


def test_sigterm_during_predict_stops_it_and_leaves_no_file(trained_run: TrainedRun, inputs: dict[str, Path],
                                                           tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text(inputs["txt"].read_text(encoding="utf-8") * 200, encoding="utf-8")  # 4,200 sentences
    out = tmp_path / "out"
    out.mkdir()
    proc = start_cli_process(["predict", *trained_run.args(
        "--trainer.default_root_dir", str(tmp_path / "runs"), "--ckpt_path", str(trained_run.best),
        "--data.predict_file", str(big), "--prediction_writer.output", str(out / "p.jsonl"),
        "--data.predict_chunk_size", "16")], trained_run.cache)
    deadline = time.monotonic() + 120
    while not os.listdir(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the writer's temporary file appears just before the first batch
    assert os.listdir(out) and proc.poll() is None, "predict never started writing"
    proc.send_signal(signal.SIGTERM)
    done = finish(proc, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "predict stopped by SIGTERM; nothing was written" in done.stderr
    assert os.listdir(out) == []
