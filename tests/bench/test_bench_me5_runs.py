"""bench/me5_runs.py: the recipe runs' table from their saved configs and metrics, and the command that resumes a run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bench import me5_runs  # noqa: E402

HEADER = "epoch,step,train_minutes,val_F1c,val_F1e\n"
BF16_CPU = {"cpu": "test CPU", "cores": 2, "isa": ["avx2", "avx512_bf16"], "torch": "2.13.0+cpu"}


@pytest.fixture(autouse=True)
def a_cpu_with_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Collected runs record the machine: the tables below do not depend on this one's."""
    monkeypatch.setattr(me5_runs.common, "machine", lambda: dict(BF16_CPU))


def fake_run(root: Path, name: str, max_epochs: int, rows: list[tuple[int, float, float, float]], version_dir: str = "version_0",
             **model) -> Path:
    version = root / name / version_dir
    version.mkdir(parents=True)
    cfg = yaml.safe_load(me5_runs.RECIPE.read_text(encoding="utf-8"))
    cfg["trainer"]["max_epochs"] = max_epochs
    cfg["model"].update(model)
    (version / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    lines = [HEADER]
    for epoch, minutes, f1c, f1e in rows:
        lines.append(f"{epoch},{(epoch + 1) * 313 - 1},{minutes},,\n")
        lines.append(f"{epoch},{(epoch + 1) * 313 - 1},,{f1c},{f1e}\n")
    (version / "metrics.csv").write_text("".join(lines), encoding="utf-8")
    return version


def test_collect_tables_every_run_with_its_settings_unlike_the_recipe(tmp_path: Path):
    epochs = yaml.safe_load(me5_runs.RECIPE.read_text(encoding="utf-8"))["trainer"]["max_epochs"]
    rows = [(e, 2.0 * (e + 1), 80.0 + e * 0.1, 70.0 + e * 0.1) for e in range(epochs)]
    fake_run(tmp_path / "runs", "recipe", epochs, rows)
    fake_run(tmp_path / "runs", "lr1e-4", epochs, [(0, 2.1, 79.0, 68.0), (1, 4.3, 86.5, 77.5)], learning_rate=1e-4)
    me5_runs.main(["collect", "--root", str(tmp_path / "runs"), "--results", str(tmp_path / "out")])
    record = json.loads((tmp_path / "out" / "me5_runs.json").read_text(encoding="utf-8"))
    runs = {r["name"]: r for r in record["runs"]}
    assert runs["recipe"]["differs_from_recipe"] == {}
    assert runs["lr1e-4"]["differs_from_recipe"] == {"model.learning_rate": 1e-4}
    assert runs["recipe"]["finished"] and not runs["lr1e-4"]["finished"]
    assert runs["lr1e-4"]["best_by_F1c"] == {"epoch": 1, "F1c": 86.5, "F1e": 77.5, "train_minutes": 4.3}
    table = (tmp_path / "out" / "me5_runs.md").read_text(encoding="utf-8")
    today = record["date"][:10]
    assert f"| lr1e-4 | model.learning_rate 0.0001 | 2 (unfinished) | 86.50 | 77.50 | 77.50 | 4.3 | 2.15 | {today}, bf16 |" in table


def test_collect_joins_the_version_folders_of_a_resumed_run_into_one_row(tmp_path: Path):
    fake_run(tmp_path / "runs", "long", 4, [(0, 2.0, 80.0, 70.0), (1, 4.0, 85.0, 75.0)])
    fake_run(tmp_path / "runs", "long", 4, [(2, 6.0, 87.0, 78.0), (3, 8.0, 86.0, 79.0)], version_dir="version_1")
    me5_runs.main(["collect", "--root", str(tmp_path / "runs"), "--results", str(tmp_path / "out")])
    (run,) = json.loads((tmp_path / "out" / "me5_runs.json").read_text(encoding="utf-8"))["runs"]
    assert [e["epoch"] for e in run["epochs"]] == [0, 1, 2, 3] and run["finished"]
    assert run["best_by_F1c"]["epoch"] == 2


def test_run_resumes_a_run_folder_that_holds_a_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    version = fake_run(tmp_path, "e10", 10, [(0, 2.0, 80.0, 70.0)])
    (version / "checkpoints").mkdir()
    (version / "checkpoints" / "last.ckpt").write_bytes(b"x")
    called = []
    monkeypatch.setattr(me5_runs.subprocess, "call", lambda cmd, cwd: called.append(cmd) or 0)
    with pytest.raises(SystemExit):
        me5_runs.main(["run", "--root", str(tmp_path), "--name", "e10", "--set", "trainer.max_epochs=10"])
    assert called[0][-4:] == ["--config", str(version / "config.yaml"), "--ckpt_path", str(version / "checkpoints" / "last.ckpt")]


def test_a_new_run_starts_from_the_recipe_with_the_settings_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    called = []
    monkeypatch.setattr(me5_runs.subprocess, "call", lambda cmd, cwd: called.append(cmd) or 0)
    with pytest.raises(SystemExit):
        me5_runs.main(["run", "--root", str(tmp_path), "--name", "s8", "--set", "seed_everything=8"])
    assert called[0][3:] == ["fit", "--config", str(me5_runs.RECIPE), "--trainer.default_root_dir", str(tmp_path / "s8"),
                             "--seed_everything", "8"]


def test_collect_reports_a_recipe_over_its_seeds_as_mean_and_spread(tmp_path: Path):
    fake_run(tmp_path / "runs", "a-s7", 2, [(0, 2.0, 80.0, 70.0), (1, 4.0, 88.0, 80.0)], warmup_ratio=0.123)
    fake_run(tmp_path / "runs", "a-s8", 2, [(0, 2.0, 80.0, 70.0), (1, 4.0, 89.0, 82.0)], warmup_ratio=0.123)
    (tmp_path / "runs" / "a-s8" / "version_0" / "config.yaml").write_text(
        (tmp_path / "runs" / "a-s8" / "version_0" / "config.yaml").read_text(encoding="utf-8")
        .replace("seed_everything: 7", "seed_everything: 8"), encoding="utf-8")
    fake_run(tmp_path / "runs", "a-unfinished", 3, [(0, 2.0, 99.0, 99.0)], warmup_ratio=0.123)
    fake_run(tmp_path / "runs", "b", 2, [(0, 2.0, 80.0, 70.0), (1, 4.0, 87.0, 79.0)])
    me5_runs.main(["collect", "--root", str(tmp_path / "runs"), "--results", str(tmp_path / "out")])
    recipes = json.loads((tmp_path / "out" / "me5_runs.json").read_text(encoding="utf-8"))["recipes"]
    varied = next(g for g in recipes if g["differs_from_recipe"].get("model.warmup_ratio") == 0.123)
    assert varied["runs"] == ["a-s7", "a-s8"] and varied["seeds"] == [7, 8]
    assert varied["F1e_mean"] == pytest.approx(81.0) and varied["F1e_std"] == pytest.approx(2 ** 0.5)
    assert varied["F1c_mean"] == pytest.approx(88.5)
    table = (tmp_path / "out" / "me5_runs.md").read_text(encoding="utf-8")
    assert "| model.warmup_ratio 0.123, trainer.max_epochs 2 | 7, 8 | 81.00 (1.41) | 88.50 (0.71) |" in table


def test_run_resumes_from_the_newest_version_folder_by_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for n in (2, 10):
        version = fake_run(tmp_path, "long", 30, [(0, 2.0, 80.0, 70.0)], version_dir=f"version_{n}")
        (version / "checkpoints").mkdir()
        (version / "checkpoints" / "last.ckpt").write_bytes(b"x")
    called = []
    monkeypatch.setattr(me5_runs.subprocess, "call", lambda cmd, cwd: called.append(cmd) or 0)
    with pytest.raises(SystemExit):
        me5_runs.main(["run", "--root", str(tmp_path), "--name", "long"])
    assert called[0][-1] == str(tmp_path / "long" / "version_10" / "checkpoints" / "last.ckpt")


def test_collect_draws_the_frontier_of_every_run_as_a_png(tmp_path: Path):
    fake_run(tmp_path / "runs", "a", 2, [(0, 2.0, 80.0, 70.0), (1, 4.0, 88.0, 80.0)])
    me5_runs.main(["collect", "--root", str(tmp_path / "runs"), "--results", str(tmp_path / "out")])
    png = (tmp_path / "out" / "me5_frontier.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert "![dev F1e against idle minutes of training](me5_frontier.png)" in (tmp_path / "out" / "me5_runs.md").read_text(encoding="utf-8")


def test_a_run_on_fewer_sentences_trains_on_a_seeded_sample_written_into_its_folder(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch):
    from ner_lit.corpus.klue import read_klue_tsv

    source = REPO / "ner_lit" / "sample" / "train.tsv"
    monkeypatch.setattr(me5_runs, "recipe_train_file", lambda: source)
    called = []
    monkeypatch.setattr(me5_runs.subprocess, "call", lambda cmd, cwd: called.append(cmd) or 0)
    with pytest.raises(SystemExit):
        me5_runs.main(["run", "--root", str(tmp_path), "--name", "n20", "--train-sentences", "20"])
    sample = tmp_path / "n20" / "train-20.tsv"
    assert called[0][-2:] == ["--data.train_file", str(sample.resolve())]
    everything = {s.id: s for s in read_klue_tsv(source)}
    picked = read_klue_tsv(sample)
    assert len(picked) == 20 and all(everything[s.id] == s for s in picked)
    ids = list(everything)
    assert [ids.index(s.id) for s in picked] == sorted(ids.index(s.id) for s in picked)
    assert json.loads((tmp_path / "n20" / "subset.json").read_text(encoding="utf-8"))["sentences"] == 20
    again = me5_runs.train_subset(tmp_path / "again", 20, source)
    assert [s.id for s in read_klue_tsv(again)] == [s.id for s in picked]  # the same seed, the same sample


def test_collect_names_a_subset_run_by_its_size_and_draws_it_at_its_share_of_the_minutes(tmp_path: Path):
    version = fake_run(tmp_path / "runs", "n2500", 2, [(0, 1.0, 80.0, 70.0), (1, 2.0, 85.0, 75.0)])
    (version.parent / "subset.json").write_text(json.dumps({"sentences": 2500, "of": 5000, "seed": 7}), encoding="utf-8")
    me5_runs.main(["collect", "--root", str(tmp_path / "runs"), "--results", str(tmp_path / "out")])
    (run,) = json.loads((tmp_path / "out" / "me5_runs.json").read_text(encoding="utf-8"))["runs"]
    assert run["differs_from_recipe"]["data.train_file"] == "2500 of 5000 sentences"
    assert run["train_fraction"] == 0.5


def test_a_subset_larger_than_the_corpus_is_refused(tmp_path: Path):
    with pytest.raises(SystemExit, match="--train-sentences 100000: expected 1 to"):
        me5_runs.train_subset(tmp_path, 100_000, REPO / "ner_lit" / "sample" / "train.tsv")


def test_collect_keeps_the_runs_an_earlier_collect_recorded_whose_folders_are_gone(tmp_path: Path):
    fake_run(tmp_path / "old-machine", "gone", 2, [(0, 2.0, 80.0, 70.0), (1, 4.0, 88.0, 80.0)], learning_rate=1e-4)
    me5_runs.main(["collect", "--root", str(tmp_path / "old-machine"), "--results", str(tmp_path / "out")])
    earlier = json.loads((tmp_path / "out" / "me5_runs.json").read_text(encoding="utf-8"))
    fake_run(tmp_path / "runs", "new", 2, [(0, 2.0, 81.0, 71.0)])
    me5_runs.main(["collect", "--root", str(tmp_path / "runs"), "--results", str(tmp_path / "out")])
    runs = {r["name"]: r for r in json.loads((tmp_path / "out" / "me5_runs.json").read_text(encoding="utf-8"))["runs"]}
    assert set(runs) == {"gone", "new"}
    assert runs["gone"]["epochs"] == earlier["runs"][0]["epochs"] and runs["gone"]["collected"] == earlier["date"]
    assert runs["gone"]["differs_from_recipe"] == {"trainer.max_epochs": 2, "model.learning_rate": 1e-4}


def test_a_run_folder_that_is_present_replaces_its_earlier_record(tmp_path: Path):
    fake_run(tmp_path / "runs", "long", 4, [(0, 2.0, 80.0, 70.0)])
    me5_runs.main(["collect", "--root", str(tmp_path / "runs"), "--results", str(tmp_path / "out")])
    fake_run(tmp_path / "runs", "long", 4, [(1, 4.0, 85.0, 75.0)], version_dir="version_1")
    me5_runs.main(["collect", "--root", str(tmp_path / "runs"), "--results", str(tmp_path / "out")])
    (run,) = json.loads((tmp_path / "out" / "me5_runs.json").read_text(encoding="utf-8"))["runs"]
    assert [e["epoch"] for e in run["epochs"]] == [0, 1]


def test_a_bf16_recipe_run_on_a_cpu_without_native_bf16_is_recorded_as_the_fp32_it_fell_back_to(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(me5_runs.common, "machine", lambda: dict(BF16_CPU, isa=["avx2"]))
    fake_run(tmp_path / "runs", "recipe", 2, [(0, 2.0, 80.0, 70.0)])
    me5_runs.main(["collect", "--root", str(tmp_path / "runs"), "--results", str(tmp_path / "out")])
    (run,) = json.loads((tmp_path / "out" / "me5_runs.json").read_text(encoding="utf-8"))["runs"]
    assert run["differs_from_recipe"] == {"trainer.max_epochs": 2, "trainer.precision": "32-true"} and run["machine"]["bf16"] is False


def test_options_a_run_predates_are_no_difference_and_newer_ones_are(tmp_path: Path):
    fake_run(tmp_path / "runs", "old", 2, [(0, 2.0, 80.0, 70.0)], dropout=0.1)  # written before dropout reached pretrained encoders
    fake_run(tmp_path / "runs", "new", 2, [(0, 2.0, 80.0, 70.0)], dropout=0.2, sparse_word_embeddings=True,
             freeze_word_embeddings=False)
    me5_runs.main(["collect", "--root", str(tmp_path / "runs"), "--results", str(tmp_path / "out")])
    runs = {r["name"]: r for r in json.loads((tmp_path / "out" / "me5_runs.json").read_text(encoding="utf-8"))["runs"]}
    assert runs["old"]["differs_from_recipe"] == {"trainer.max_epochs": 2}
    assert runs["new"]["differs_from_recipe"] == {"trainer.max_epochs": 2, "model.freeze_word_embeddings": False,
                                                  "model.sparse_word_embeddings": True, "model.dropout": 0.2}


def test_collect_sets_each_change_against_the_recipe_run_of_the_same_seed(tmp_path: Path):
    runs, epochs = tmp_path / "runs", yaml.safe_load(me5_runs.RECIPE.read_text(encoding="utf-8"))["trainer"]["max_epochs"]

    def curve(f1c: float, f1e: float) -> list[tuple[int, float, float, float]]:
        return [(e, 2.0 * (e + 1), 80.0, 70.0) for e in range(epochs - 1)] + [(epochs - 1, 2.0 * epochs, f1c, f1e)]

    for name, seed, f1c, f1e in (("recipe-s7", 7, 88.0, 80.0), ("recipe-s8", 8, 89.0, 82.0)):
        fake_run(runs, name, epochs, curve(f1c, f1e))
        config = runs / name / "version_0" / "config.yaml"
        config.write_text(config.read_text(encoding="utf-8").replace("seed_everything: 7", f"seed_everything: {seed}"),
                          encoding="utf-8")
    fake_run(runs, "drop", epochs, curve(88.5, 81.25), dropout=0.2, sparse_word_embeddings=False)  # a config of today
    fake_run(runs, "cosine-unfinished", epochs, curve(99.0, 99.0)[:1], schedule="cosine")
    me5_runs.main(["collect", "--root", str(runs), "--results", str(tmp_path / "out")])
    (change,) = json.loads((tmp_path / "out" / "me5_runs.json").read_text(encoding="utf-8"))["against_recipe"]
    assert change["name"] == "drop" and change["against"] == "recipe-s7" and change["seed"] == 7
    assert change["changes"] == {"model.dropout": 0.2}
    assert change["F1e_gain"] == pytest.approx(1.25) and change["F1c_gain"] == pytest.approx(0.5)
    table = (tmp_path / "out" / "me5_runs.md").read_text(encoding="utf-8")
    assert "varies by 1.41 (sample std)" in table
    assert "| drop | model.dropout 0.2 | 7 | 81.25 | +1.25 | 88.50 | +0.50 |" in table


def fp32_run(root: Path) -> None:
    """A one-epoch run saved with precision 32-true, scoring higher than the other fakes."""
    version = fake_run(root, "fp32", 1, [(0, 5.0, 89.5, 79.5)])
    cfg = yaml.safe_load((version / "config.yaml").read_text(encoding="utf-8"))
    cfg["trainer"]["precision"] = "32-true"
    (version / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")


def test_collect_records_the_frontier_as_the_best_f1e_reached_within_each_number_of_minutes(tmp_path: Path):
    fake_run(tmp_path / "runs", "fast-start", 3, [(0, 2.0, 84.0, 74.0), (1, 4.0, 86.0, 76.0), (2, 6.0, 87.0, 77.0)])
    fake_run(tmp_path / "runs", "slow-start", 3, [(0, 2.0, 80.0, 70.0), (1, 4.0, 85.0, 75.0), (2, 6.0, 89.0, 79.0)])
    version = fake_run(tmp_path / "runs", "n2500", 1, [(0, 1.0, 83.0, 72.0)])
    (version.parent / "subset.json").write_text(json.dumps({"sentences": 2500, "of": 5000, "seed": 7}), encoding="utf-8")
    fp32_run(tmp_path / "runs")  # best of all, but its minutes are not bf16's
    me5_runs.main(["collect", "--root", str(tmp_path / "runs"), "--results", str(tmp_path / "out"),
                   "--idle-epoch-minutes", "2.0"])
    record = json.loads((tmp_path / "out" / "me5_runs.json").read_text(encoding="utf-8"))
    # the half-data run's epoch sits at half an epoch's minutes; a lower F1e later never enters; fp32 stays out
    assert [(p["minutes"], p["F1e"], p["run"], p["epoch"]) for p in record["frontier"]] == [
        (1.0, 72.0, "n2500", 1), (2.0, 74.0, "fast-start", 1), (4.0, 76.0, "fast-start", 2), (6.0, 79.0, "slow-start", 3)]
    assert "| 4.00 | 76.00 | fast-start | 2 |" in (tmp_path / "out" / "me5_runs.md").read_text(encoding="utf-8")


def test_the_frontier_picture_leaves_out_fp32_runs_its_minutes_axis_cannot_place(tmp_path: Path, capsys: pytest.CaptureFixture):
    fp32_run(tmp_path / "runs")
    me5_runs.main(["collect", "--root", str(tmp_path / "runs"), "--results", str(tmp_path / "out")])
    assert "no frontier picture: no bf16 runs" in capsys.readouterr().out
    assert not (tmp_path / "out" / "me5_frontier.png").exists()
