"""The CRF head: its likelihood is the exact one, its scores decode with the IOB2 constraint, they travel
in the tagger's record, and a CRF tagger predicts the same through every path."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ner_lit.alignment.viterbi import _viterbi_numpy, _viterbi_python
from ner_lit.checkpoint.format import spec_of
from ner_lit.checkpoint.spec import CRF_FORMAT, SpecError, TaggerSpec
from ner_lit.inference.predictor import Predictor
from ner_lit.training.crf import CRFHead

from pipeline_fixtures import TrainedRun, in_this_process, short_fit_config

IGNORE = -100


def brute_force_nll(e: torch.Tensor, y: list[int], head: CRFHead) -> float:
    """-log p(y) by enumerating every tag sequence."""
    t, s = head.transitions.detach(), head.start.detach()

    def score(path) -> float:
        return float(s[path[0]] + sum(e[i, p] for i, p in enumerate(path))
                     + sum(t[a, b] for a, b in zip(path, path[1:])))

    log_z = math.log(sum(math.exp(score(p)) for p in itertools.product(range(e.shape[1]), repeat=len(y))))
    return log_z - score(y)


def test_the_likelihood_is_the_exact_one_over_the_labelled_positions() -> None:
    torch.manual_seed(0)
    head = CRFHead(3)
    with torch.no_grad():
        head.transitions.normal_()
        head.start.normal_()
    emissions = torch.randn(2, 5, 3)
    labels = torch.tensor([[0, IGNORE, 2, 1, IGNORE], [IGNORE, IGNORE, 1, IGNORE, IGNORE]])
    nll, n = head.nll(emissions, labels, IGNORE)
    expected = (brute_force_nll(emissions[0, [0, 2, 3]], [0, 2, 1], head)
                + brute_force_nll(emissions[1, [2]], [1], head))
    assert n == 4
    assert float(nll.detach()) == pytest.approx(expected, rel=1e-5)


def test_a_window_without_labels_adds_nothing_and_gradients_reach_the_transitions() -> None:
    head = CRFHead(3)
    emissions = torch.randn(2, 4, 3, requires_grad=True)
    labels = torch.tensor([[0, 1, 2, 0], [IGNORE] * 4])
    nll, n = head.nll(emissions, labels, IGNORE)
    nll.backward()
    assert n == 4 and head.transitions.grad is not None and float(head.transitions.grad.abs().sum()) > 0
    assert float(emissions.grad[1].abs().sum()) == 0


LABELS = ["O", "B-A", "I-A", "B-B", "I-B"]


def constraint() -> tuple[np.ndarray, np.ndarray]:
    n = len(LABELS)
    allowed, may_start = np.ones((n, n), bool), np.ones(n, bool)
    for j, tag in enumerate(LABELS):
        if tag.startswith("I-"):
            may_start[j] = False
            for i, prev in enumerate(LABELS):
                allowed[i, j] = prev != "O" and prev[2:] == tag[2:]
    return allowed, may_start


@pytest.mark.parametrize("seed", range(5))
def test_viterbi_with_learned_transitions_finds_the_best_valid_path_both_ways(seed: int) -> None:
    rng = np.random.default_rng(seed)
    allowed, may_start = constraint()
    lengths = [int(x) for x in rng.integers(1, 6, size=8)]
    logp = rng.normal(size=(sum(lengths), len(LABELS)))
    trans, start = rng.normal(size=(len(LABELS), len(LABELS))), rng.normal(size=len(LABELS))
    fast, plain = _viterbi_numpy(logp, lengths, allowed, may_start, trans, start), \
        _viterbi_python(logp, lengths, allowed, may_start, trans, start)
    assert fast.tolist() == plain.tolist()
    row, best = 0, []
    for m in lengths:
        valid = [p for p in itertools.product(range(len(LABELS)), repeat=m)
                 if may_start[p[0]] and all(allowed[a, b] for a, b in zip(p, p[1:]))]
        best += max(valid, key=lambda p: start[p[0]] + sum(logp[row + i, q] for i, q in enumerate(p))
                    + sum(trans[a, b] for a, b in zip(p, p[1:])))
        row += m
    assert fast.tolist() == best


def test_the_record_carries_the_scores_and_is_written_as_format_4_only_with_them(trained_run: TrainedRun) -> None:
    spec = spec_of(trained_run.best)
    with_crf = spec.with_crf(np.zeros((len(spec.labels),) * 2), np.ones(len(spec.labels)))
    record = with_crf.to_dict()
    assert record["format"] == CRF_FORMAT and spec.to_dict()["format"] == 3
    again = TaggerSpec.from_dict(json.loads(json.dumps(record)), "x.ckpt")
    assert again.crf == with_crf.crf
    with pytest.raises(SpecError, match="x.ckpt: its CRF scores are not"):
        TaggerSpec.from_dict({**record, "crf": {"transitions": [[0.0]], "start": [0.0]}}, "x.ckpt")


# --------------------------------------------------------------------------- a CRF tagger end to end
@pytest.fixture(scope="module")
def crf_run(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crf")
    config = short_fit_config(trained_run.data_dir, folder, epochs=2, batches=6)
    out = in_this_process(["fit", "--config", str(config), "--model.head", "crf"], trained_run.cache)
    assert out.returncode == 0, out.stderr[-3000:]
    return folder / "runs" / "version_0"


def test_a_crf_fit_records_learned_transitions_in_its_checkpoints(crf_run: Path) -> None:
    best = next(p for p in (crf_run / "checkpoints").glob("epoch*.ckpt"))
    spec = spec_of(best)
    assert spec.crf is not None and spec.format == CRF_FORMAT
    assert np.abs(np.asarray(spec.crf["transitions"])).max() > 0  # trained away from their zero start
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert np.allclose(state["crf.transitions"].numpy(), spec.crf["transitions"])


def test_a_crf_tagger_predicts_the_same_from_its_checkpoint_its_export_and_predict(
        crf_run: Path, trained_run: TrainedRun, tmp_path: Path) -> None:
    best = next(p for p in (crf_run / "checkpoints").glob("epoch*.ckpt"))
    texts = ["김철수는 3월 5일 서울에서 삼성전자를 방문했다.", "이순신은 조선 중기의 무신이다."]
    from_ckpt = Predictor.from_checkpoint(best)
    from_dir = Predictor.from_pretrained(crf_run / "hf_model")
    assert from_ckpt.aligner.decoder.crf is not None and from_dir.aligner.decoder.crf is not None
    a, b = from_ckpt.predict(texts), from_dir.predict(texts)
    assert [p.entities for p in a] == [p.entities for p in b]
    source = tmp_path / "in.txt"
    source.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    output = tmp_path / "out.jsonl"
    out = in_this_process(["predict", "--config", str(crf_run / "config.yaml"), "--ckpt_path", str(best),
                           "--data.predict_file", str(source), "--prediction_writer.output", str(output)],
                          trained_run.cache)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in rows] == \
        [[(e.start, e.end, e.label) for e in p.entities] for p in a]


def test_an_unknown_head_is_a_usage_error_naming_the_choices(trained_run: TrainedRun, tmp_path: Path) -> None:
    config = short_fit_config(trained_run.data_dir, tmp_path, epochs=1, batches=1)
    out = in_this_process(["fit", "--config", str(config), "--model.head", "mlp"], trained_run.cache)
    assert out.returncode == 2
    assert 'error: Parser key "model.head":' in out.stderr and "'softmax', 'crf']. Got value: mlp" in out.stderr
