"""NERModel's settings groups: flat ``--model.*`` options, packed into a network group and an optimizer group."""
from __future__ import annotations

import dataclasses
import inspect
import re

import docstring_parser
import pytest

from ner_lit.training.model import NERModel
from ner_lit.training.optimization import schedule_factor
from ner_lit.training.settings import ModelError, NetworkSettings, OptimizerSettings

GROUPS = {"network": NetworkSettings, "optimization": OptimizerSettings}


def options() -> list[str]:
    return [p for p in inspect.signature(NERModel.__init__).parameters if p != "self"]


def test_every_option_is_a_field_of_exactly_one_group_under_its_own_name() -> None:
    fields = [f.name for group in GROUPS.values() for f in dataclasses.fields(group)]
    assert sorted(fields) == sorted(options())


def test_the_flat_arguments_land_in_their_groups_and_stay_flat_in_the_hyperparameters() -> None:
    model = NERModel(pretrained="enc", hidden_size=64, learning_rate=1e-3, head_learning_rate=1e-2)
    assert (model.network.pretrained, model.network.hidden_size) == ("enc", 64)
    assert (model.optimization.learning_rate, model.optimization.head_learning_rate) == (1e-3, 1e-2)
    assert list(model.hparams) == options()


def test_the_init_docstring_lists_every_option_under_its_groups_heading() -> None:
    doc = inspect.getdoc(NERModel.__init__) or ""
    listed: dict[str, list[str]] = {}
    group = None
    for line in doc.splitlines():
        if m := re.match(r"^\s*\[(\w+)\]:", line):
            group = listed.setdefault(m.group(1), [])
        elif group is not None and (m := re.match(r"^ {4}(\w+): ", line)):
            group.append(m.group(1))
    assert listed == {cls.__name__: [f.name for f in dataclasses.fields(cls)] for cls in GROUPS.values()}
    params = {p.arg_name: p.description for p in docstring_parser.parse(doc).params}
    assert all(params.get(name) for name in options())


def test_an_unknown_adamw_is_refused_by_its_group() -> None:
    with pytest.raises(ModelError, match=r"--model.adamw 'fast': expected one of fused, foreach, for_loop"):
        OptimizerSettings(adamw="fast")  # type: ignore[arg-type]


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5])
def test_a_layer_decay_outside_0_to_1_is_refused_by_its_group(decay: float) -> None:
    with pytest.raises(ModelError, match=rf"--model.layer_decay {decay}: expected a factor in \(0, 1\]"):
        OptimizerSettings(layer_decay=decay)


def test_the_schedule_warms_up_then_decays_or_stays() -> None:
    assert [schedule_factor(s, 2, 6, "linear") for s in range(7)] == [1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert [schedule_factor(s, 2, 6, "constant") for s in range(4)] == [1 / 3, 2 / 3, 1.0, 1.0]
    assert [schedule_factor(s, 2, 6, "cosine") for s in range(7)] == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5 + 0.5 ** 1.5, 0.5, 0.5 - 0.5 ** 1.5, 0.0])


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_a_dropout_outside_0_to_1_is_refused_by_its_group(dropout: float) -> None:
    with pytest.raises(ModelError, match=rf"--model.dropout {dropout}: expected a probability in \[0, 1\)"):
        NetworkSettings(dropout=dropout)
