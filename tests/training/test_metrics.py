"""The metrics must give KLUE's numbers: scikit-learn's char macro F1 and seqeval's strict entity macro F1."""
from __future__ import annotations

import math
import random
import warnings
from pathlib import Path

import pytest
import torch
from seqeval.metrics import classification_report as seqeval_report
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.scheme import IOB2
from sklearn.metrics import f1_score as sklearn_f1

from ner_lit.corpus.klue import read_klue_tsv
from ner_lit.corpus.records import KLUE_LABELS
from ner_lit.training.metrics import MACRO_AVG, MICRO_AVG, CharMacroF1, EntityMacroF1

TOL = 1e-9
#: Three types, so that random soups hit every case (absent, only gold, only predicted) often.
LABELS = ["O", "B-A", "I-A", "B-B", "I-B", "B-C", "I-C"]

Tags = list[list[str]]


def ids(sentences: Tags, labels: list[str] = LABELS) -> list[torch.Tensor]:
    index = {lab: i for i, lab in enumerate(labels)}
    return [torch.tensor([index[t] for t in s], dtype=torch.long) for s in sentences]


def char_f1(gold: Tags, pred: Tags, labels: list[str] = LABELS) -> float:
    metric = CharMacroF1(labels)
    metric.update(ids(pred, labels), ids(gold, labels))
    return metric.compute().item()


def entity_f1(gold: Tags, pred: Tags, labels: list[str] = LABELS) -> float:
    metric = EntityMacroF1(labels)
    metric.update(ids(pred, labels), ids(gold, labels))
    return metric.compute().item()


def both_f1(gold: Tags, pred: Tags, labels: list[str] = LABELS) -> tuple[float, float]:
    """(char F1, entity F1), converting the tags once: the dev-set tests are dominated by that."""
    pred_ids, gold_ids = ids(pred, labels), ids(gold, labels)
    char, entity = CharMacroF1(labels), EntityMacroF1(labels)
    char.update(pred_ids, gold_ids)
    entity.update(pred_ids, gold_ids)
    return char.compute().item(), entity.compute().item()


def sklearn_char_f1(gold: Tags, pred: Tags, labels: list[str] = LABELS) -> float:
    index = {lab: i for i, lab in enumerate(labels)}
    y_true = [index[t] for s in gold for t in s]
    y_pred = [index[t] for s in pred for t in s]
    return 100 * sklearn_f1(y_true, y_pred, average="macro", labels=list(range(len(labels))), zero_division=1)


def seqeval_entity_f1(gold: Tags, pred: Tags) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval's UndefinedMetricWarning for types on one side only
        return 100 * seqeval_f1(gold, pred, average="macro", mode="strict", scheme=IOB2)


def random_soup(rng: random.Random, n_sentences: int, max_len: int) -> tuple[Tags, Tags]:
    """Gold and prediction of any tags at all: stray I-, type switches, empty sentences."""
    gold = [[rng.choice(LABELS) for _ in range(rng.randint(0, max_len))] for _ in range(n_sentences)]
    pred = [[t if rng.random() < 0.6 else rng.choice(LABELS) for t in s] for s in gold]
    return gold, pred


SOUPS = [random_soup(random.Random(seed), n_sentences=1 + seed % 12, max_len=1 + seed % 25) for seed in range(300)]


# --- agreement with the reference implementations -------------------------------------------


def test_char_f1_equals_sklearn_on_random_tag_soups() -> None:
    for gold, pred in SOUPS:
        if sum(map(len, gold)):  # sklearn refuses empty input
            assert char_f1(gold, pred) == pytest.approx(sklearn_char_f1(gold, pred), abs=TOL)


def test_entity_f1_equals_seqeval_on_random_tag_soups() -> None:
    compared = 0
    for gold, pred in SOUPS:
        expected = seqeval_entity_f1(gold, pred)
        if not math.isnan(expected):  # no entity on either side: see the dedicated test
            assert entity_f1(gold, pred) == pytest.approx(expected, abs=TOL)
            compared += 1
    assert compared > 250


def test_entity_report_equals_seqeval_classification_report() -> None:
    for gold, pred in SOUPS[:50]:
        metric = EntityMacroF1(LABELS)
        metric.update(ids(pred), ids(gold))
        ours = metric.report()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = seqeval_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True)
        theirs.pop("weighted avg", None)
        if not any(k not in (MICRO_AVG, MACRO_AVG) for k in theirs):
            continue  # seqeval's aggregate rows are NaN without any type
        assert list(ours) == list(theirs)
        for row, values in theirs.items():
            assert ours[row]["support"] == values["support"]
            for key, ref in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
                assert ours[row][key] == pytest.approx(100 * values[ref], abs=TOL), (row, key)


def test_report_macro_f1_is_compute() -> None:
    gold, pred = SOUPS[7]
    metric = EntityMacroF1(LABELS)
    metric.update(ids(pred), ids(gold))
    assert metric.report()[MACRO_AVG]["f1"] == pytest.approx(metric.compute().item(), abs=TOL)


# --- the real dev set -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_gold(klue_dir: Path) -> Tags:
    """Per-sentence gold tags with the whitespace characters removed, as KLUE scores them."""
    gold = [[t for c, t in zip(s.text, s.tags) if not c.isspace()] for s in read_klue_tsv(klue_dir / "dev.tsv")]
    assert len(gold) == 5000 and sum(map(len, gold)) == 225_550
    return gold


def corrupt(gold: Tags, seed: int, rate: float) -> Tags:
    rng = random.Random(seed)
    return [[rng.choice(KLUE_LABELS) if rng.random() < rate else t for t in s] for s in gold]


@pytest.mark.parametrize(("seed", "rate"), [(0, 0.01), (1, 0.05), (2, 0.2), (3, 0.5)])
def test_dev_set_scores_equal_sklearn_and_seqeval(dev_gold: Tags, seed: int, rate: float) -> None:
    pred = corrupt(dev_gold, seed, rate)
    char, entity = both_f1(dev_gold, pred, KLUE_LABELS)
    assert char == pytest.approx(sklearn_char_f1(dev_gold, pred, KLUE_LABELS), abs=TOL)
    assert entity == pytest.approx(seqeval_entity_f1(dev_gold, pred), abs=TOL)


def test_dev_set_gold_against_itself_scores_100(dev_gold: Tags) -> None:
    assert both_f1(dev_gold, dev_gold, KLUE_LABELS) == (100.0, 100.0)


def test_dev_set_all_o_prediction_scores_o_only(dev_gold: Tags) -> None:
    """Every entity label is gold-only (F1 0); only O scores, so F1c = F1(O) / 13 and F1e = 0."""
    pred = [["O"] * len(s) for s in dev_gold]
    char, entity = both_f1(dev_gold, pred, KLUE_LABELS)
    assert char == pytest.approx(sklearn_char_f1(dev_gold, pred, KLUE_LABELS), abs=TOL)
    assert entity == 0.0


# --- edges ------------------------------------------------------------------------------------


def test_all_o_scores_100_in_char_f1_because_absent_classes_count_as_1() -> None:
    gold = pred = [["O", "O", "O"], ["O"]]
    assert char_f1(gold, pred) == pytest.approx(sklearn_char_f1(gold, pred), abs=TOL) == 100.0


def test_no_entity_on_either_side_scores_0_where_seqeval_gives_nan() -> None:
    gold = pred = [["O", "O", "I-A"], ["O"]]
    assert math.isnan(seqeval_entity_f1(gold, pred))
    assert entity_f1(gold, pred) == 0.0


def test_class_absent_from_both_sides_scores_1_in_char_f1_and_is_not_averaged_in_entity_f1() -> None:
    gold = [["B-A", "I-A", "O"]]
    pred = [["B-A", "O", "O"]]  # B and C occur nowhere
    # char: O 2/3, B-A 1, I-A 0, four absent labels 1 each -> (2/3 + 1 + 0 + 4) / 7
    assert char_f1(gold, pred) == pytest.approx(100 * (2 / 3 + 5) / 7, abs=TOL)
    assert char_f1(gold, pred) == pytest.approx(sklearn_char_f1(gold, pred), abs=TOL)
    # entity: only A is averaged, and its one entity is wrong
    assert entity_f1(gold, pred) == 0.0 == seqeval_entity_f1(gold, pred)


def test_class_only_predicted_scores_0() -> None:
    gold = [["B-A", "O", "O"]]
    pred = [["B-A", "O", "B-B"]]
    # char: O 2/3 (tp 1, fn 1), B-A 1, B-B 0 (only predicted), four absent labels 1 each
    assert char_f1(gold, pred) == pytest.approx(100 * (2 / 3 + 1 + 0 + 4) / 7, abs=TOL)
    assert char_f1(gold, pred) == pytest.approx(sklearn_char_f1(gold, pred), abs=TOL)
    # entity: A is perfect, B is predicted only -> mean(1, 0)
    assert entity_f1(gold, pred) == 50.0 == seqeval_entity_f1(gold, pred)


def test_i_without_b_is_not_an_entity() -> None:
    gold = [["O", "B-A", "I-A", "O"]]
    pred = [["O", "I-A", "I-A", "O"]]  # same characters, but no B: nothing predicted
    assert entity_f1(gold, pred) == 0.0 == seqeval_entity_f1(gold, pred)
    report = EntityMacroF1(LABELS)
    report.update(ids(pred), ids(gold))
    assert report.report()["A"]["support"] == 1 and report.tp.sum() == 0 and report.n_pred.sum() == 0


def test_i_of_another_type_ends_an_entity_and_starts_none() -> None:
    gold = [["B-A", "I-A", "O"]]
    pred = [["B-A", "I-B", "O"]]  # predicted A is [0, 1), and I-B is stray
    assert entity_f1(gold, pred) == 0.0 == seqeval_entity_f1(gold, pred)
    assert entity_f1([["B-A", "O", "O"]], pred) == 100.0 == seqeval_entity_f1([["B-A", "O", "O"]], pred)


def test_entities_at_sentence_start_and_end_are_counted() -> None:
    gold = [["B-A", "I-A", "O", "B-B", "I-B"], ["B-C", "O", "B-A"]]
    assert entity_f1(gold, gold) == 100.0
    pred = [["B-A", "I-A", "O", "B-B", "O"], ["B-C", "O", "B-A"]]
    assert entity_f1(gold, pred) == pytest.approx(seqeval_entity_f1(gold, pred), abs=TOL)


def test_sentence_boundary_ends_an_entity() -> None:
    """An I-A opening the next sentence is stray: it must not extend the A that closed the previous one."""
    gold = [["O", "B-A"], ["I-A", "O"]]
    pred = [["O", "B-A"], ["O", "O"]]
    assert entity_f1(gold, pred) == 100.0 == seqeval_entity_f1(gold, pred)
    merged_wrongly = [["O", "B-A", "I-A", "O"]]
    assert entity_f1(merged_wrongly, [["O", "B-A", "O", "O"]]) == 0.0


def test_one_character_entities() -> None:
    gold = [["B-A", "B-A", "B-B", "O", "B-C"]]
    pred = [["B-A", "B-B", "B-B", "O", "B-C"]]
    # A: tp 1 of 1 predicted, 2 gold; B: tp 1 of 2 predicted, 1 gold; C: perfect
    expected = 100 * (2 / 3 + 2 / 3 + 1) / 3
    assert entity_f1(gold, pred) == pytest.approx(expected, abs=TOL)
    assert entity_f1(gold, pred) == pytest.approx(seqeval_entity_f1(gold, pred), abs=TOL)


def test_no_sentences_at_all_score_0() -> None:
    for metric in (CharMacroF1(LABELS), EntityMacroF1(LABELS)):
        metric.update([], [])
        assert metric.compute().item() == 0.0


def test_only_empty_sentences_score_0() -> None:
    empty = [torch.tensor([]), torch.zeros(0, dtype=torch.long)]  # torch.tensor([]) is float, and harmless
    for metric in (CharMacroF1(LABELS), EntityMacroF1(LABELS)):
        metric.update(empty, empty)
        assert metric.compute().item() == 0.0


def test_compute_returns_float64() -> None:
    gold, pred = SOUPS[3]
    for metric in (CharMacroF1(LABELS), EntityMacroF1(LABELS)):
        metric.update(ids(pred), ids(gold))
        assert metric.compute().dtype == torch.float64


# --- accumulation, reset, bad input -----------------------------------------------------------


def test_several_updates_equal_one_update_with_everything() -> None:
    gold = [s for g, _ in SOUPS[:40] for s in g]
    pred = [s for _, p in SOUPS[:40] for s in p]
    for cls in (CharMacroF1, EntityMacroF1):
        once, pieces = cls(LABELS), cls(LABELS)
        once.update(ids(pred), ids(gold))
        for lo, hi in ((0, 1), (1, 40), (40, 41), (41, len(gold))):
            pieces.update(ids(pred[lo:hi]), ids(gold[lo:hi]))
        assert pieces.compute().item() == once.compute().item()


def test_reset_forgets_earlier_updates() -> None:
    (gold_a, pred_a), (gold_b, pred_b) = SOUPS[11], SOUPS[12]
    for cls in (CharMacroF1, EntityMacroF1):
        fresh, reused = cls(LABELS), cls(LABELS)
        fresh.update(ids(pred_b), ids(gold_b))
        reused.update(ids(pred_a), ids(gold_a))
        reused.compute()
        reused.reset()
        reused.update(ids(pred_b), ids(gold_b))
        assert reused.compute().item() == fresh.compute().item()


def test_sentence_length_mismatch_is_a_value_error_naming_the_sentence() -> None:
    for metric in (CharMacroF1(LABELS), EntityMacroF1(LABELS)):
        with pytest.raises(ValueError, match="sentence 1: 2 predicted labels for 3 gold labels"):
            metric.update(ids([["O"], ["O", "O"]]), ids([["O"], ["O", "O", "O"]]))


def test_sentence_count_mismatch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="1 predicted sentences for 2 gold sentences"):
        EntityMacroF1(LABELS).update(ids([["O"]]), ids([["O"], ["O"]]))


def test_label_id_out_of_range_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"label ids must lie in \[0, 7\)"):
        CharMacroF1(LABELS).update([torch.tensor([0, 7])], [torch.tensor([0, 0])])


def test_float_label_ids_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="must be integers"):
        EntityMacroF1(LABELS).update([torch.tensor([0.0, 1.0])], [torch.tensor([0, 1])])


def test_label_that_is_not_bio_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="'B-<type>'"):
        EntityMacroF1(["O", "B-A", "PER"])
    with pytest.raises(ValueError, match="duplicate"):
        CharMacroF1(["O", "O"])
