"""Experiment definitions: what parses, and errors that name the field at fault."""
from __future__ import annotations

import json

import pytest

from services.experiments.definition import DefinitionError, parse


def doc(**overrides) -> dict:
    base = {"name": "ab", "variants": [
        {"name": "control", "kind": "model", "model_version": "v1", "weight": 50},
        {"name": "rule", "kind": "trending", "weight": 50},
        {"name": "next", "kind": "shadow", "model_version": "v2"},
    ]}
    base.update(overrides)
    return base


def variants(*changes: dict) -> list[dict]:
    out = doc()["variants"]
    for n, change in enumerate(changes):
        out[n] = {**out[n], **change}
    return out


def test_a_good_definition_parses_from_json_text_and_round_trips():
    experiment = parse(json.dumps(doc()))
    assert [v.name for v in experiment.served] == ["control", "rule"]
    assert experiment.shadow.model_version == "v2"
    assert experiment.model_versions() == {"v1", "v2"}
    assert experiment.running and not experiment.winner
    assert parse(experiment.to_json()) == experiment


@pytest.mark.parametrize("definition, field, words", [
    (doc(variants=variants({"weight": -1})), "variants[0].weight", "greater than or equal to 0"),
    (doc(variants=variants({"weight": "lots"})), "variants[0].weight", "valid number"),
    (doc(variants=variants({}, {"kind": "popular"})), "variants[1].kind", "'model', 'trending' or 'shadow'"),
    (doc(variants=variants({"modle_version": "v1"})), "variants[0].modle_version", "unknown field"),
    (doc(variants=variants({"model_version": ""})), "variants[0]", "needs model_version"),
    (doc(variants=variants({}, {"model_version": "v3"})), "variants[1]", "trending variant takes no model_version"),
    (doc(variants=variants({}, {}, {"weight": 5})), "variants[2]", "never served, so it takes no weight"),
    (doc(variants=variants({}, {"weight": None})), "variants[1]", "needs a weight"),
    (doc(variants=variants({"name": "has space"})), "variants[0].name", "should match pattern"),
    (doc(name=""), "name", "should match pattern"),
    (doc(variants=[]), "variants", "at least 1 item"),
    (doc(colour="red"), "colour", "unknown field"),
    (doc(variants=variants({}, {"name": "control"})), "definition", "control appear more than once"),
    (doc(variants=variants({}, {}, {"kind": "shadow"})[2:]), "definition", "at least one variant must be served"),
])
def test_errors_name_the_field(definition, field, words):
    with pytest.raises(DefinitionError) as err:
        parse(definition)
    assert f"{field}: " in str(err.value) and words in str(err.value), str(err.value)


@pytest.mark.parametrize("weights", [(0, 0), (0.0, 0.0)])
def test_weights_must_sum_to_a_positive_number(weights):
    with pytest.raises(DefinitionError, match="weights must sum to a positive number, got 0"):
        parse(doc(variants=variants({"weight": weights[0]}, {"weight": weights[1]})))


@pytest.mark.parametrize("bad", ["Infinity", "NaN"])
def test_weights_must_be_finite(bad):
    with pytest.raises(DefinitionError, match=r"variants\[0\]\.weight"):
        parse('{"name": "ab", "variants": [{"name": "a", "kind": "trending", "weight": %s}]}' % bad)


def test_not_json_and_not_an_object():
    with pytest.raises(DefinitionError, match="not valid JSON"):
        parse("{name: ab}")
    with pytest.raises(DefinitionError, match="must be a JSON object"):
        parse("[1, 2]")


def test_zero_weight_variant_is_allowed_beside_a_positive_one():
    experiment = parse(doc(variants=variants({"weight": 0})))
    assert [v.weight for v in experiment.served] == [0, 50]


def test_variant_lookup_names_the_choices():
    with pytest.raises(DefinitionError, match="no variant 'nope' .*control, rule, next"):
        parse(doc()).variant("nope")
