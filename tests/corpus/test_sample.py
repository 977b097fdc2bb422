"""The committed sample corpus: reproducible, well formed, covering KLUE's types, splits disjoint."""
from __future__ import annotations

from pathlib import Path

import pytest

from ner_lit.corpus.klue import read_klue_tsv
from ner_lit.corpus.records import KLUE_TYPES, Sentence
from ner_lit.sample import SAMPLE_DIR
from ner_lit.sample.generate import main, particle


@pytest.fixture(scope="module")
def sample() -> dict[str, list[Sentence]]:
    return {split: read_klue_tsv(SAMPLE_DIR / f"{split}.tsv") for split in ("train", "dev")}


def test_committed_files_equal_a_fresh_generation(tmp_path: Path) -> None:
    main(["--out", str(tmp_path)])
    for name in ("train.tsv", "dev.tsv"):
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), f"regenerate {name}"


def test_splits_have_400_and_100_sentences_with_split_ids(sample: dict[str, list[Sentence]]) -> None:
    assert [len(sample["train"]), len(sample["dev"])] == [400, 100]
    assert sample["dev"][0].id == "sample-dev-00001"


@pytest.mark.parametrize("split", ["train", "dev"])
def test_split_covers_all_six_klue_types(sample: dict[str, list[Sentence]], split: str) -> None:
    types = {e.label for s in sample[split] for e in s.entities}
    assert types == set(KLUE_TYPES)


@pytest.mark.parametrize("split", ["train", "dev"])
def test_split_has_sentences_without_entities(sample: dict[str, list[Sentence]], split: str) -> None:
    assert any(not s.entities for s in sample[split])


def test_train_and_dev_share_no_sentence_text(sample: dict[str, list[Sentence]]) -> None:
    assert not {s.text for s in sample["train"]} & {s.text for s in sample["dev"]}


def test_particles_stay_outside_the_entity(sample: dict[str, list[Sentence]]) -> None:
    s = next(s for s in sample["train"] if "에서" in s.text and any(e.label == "LC" for e in s.entities))
    ends = {e.end for e in s.entities if e.label == "LC"}
    assert any(s.text[end : end + 2] == "에서" and s.tags[end] == "O" for end in ends)


@pytest.mark.parametrize(
    ("word", "key", "form"),
    [("서울", "은", "은"), ("부산", "이", "이"), ("국회", "을", "를"), ("서울", "으로", "로"), ("3명", "으로", "으로"), ("14%", "이", "가")],
)
def test_particle_follows_the_last_syllable(word: str, key: str, form: str) -> None:
    assert particle(word, key) == form
