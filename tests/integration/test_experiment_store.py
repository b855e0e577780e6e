"""The experiment store and the gateway's watcher on a real (embedded) Redis."""
from __future__ import annotations

import json

import pytest

from services.experiments.definition import DefinitionError
from services.experiments.store import (
    DEFINITIONS, ExperimentConflict, ExperimentStore, ExperimentWatcher, Malformed, ModelNotLoaded,
    UnknownExperiment,
)

pytestmark = pytest.mark.integration


def definition(name="ab", control="v1", weights=(50, 50), shadow=None) -> dict:
    variants = [{"name": "control", "kind": "model", "model_version": control, "weight": weights[0]},
                {"name": "rule", "kind": "trending", "weight": weights[1]}]
    if shadow:
        variants.append({"name": "next", "kind": "shadow", "model_version": shadow})
    return {"name": name, "variants": variants}


async def test_set_get_list_and_promote(redis_client):
    store = ExperimentStore(redis_client, clock=lambda: 1_700_000_000.0)
    assert await store.get("ab") is None and await store.list() == [] and await store.default() is None
    stored = await store.set(definition(shadow="v2"), loaded_models={"v1", "v2"})
    assert await store.get("ab") == stored and stored.shadow.model_version == "v2"
    version = await store.version()

    winner = await store.promote("ab", "control")
    assert (winner.experiment, winner.variant, winner.kind, winner.model_version) == ("ab", "control", "model", "v1")
    assert winner.promoted_at_ms == 1_700_000_000_000
    assert await store.default() == winner
    ended = await store.get("ab")
    assert not ended.running and ended.winner == "control"
    assert await store.version() == version + 1

    # Once ended, another experiment may start; the ended one stays listed.
    await store.set(definition("next-test"), loaded_models={"v1"})
    assert [e.name for e in await store.list()] == ["ab", "next-test"]


async def test_refusals_name_the_cause_and_write_nothing(redis_client):
    store = ExperimentStore(redis_client)
    with pytest.raises(ModelNotLoaded, match=r"variants\[2\] \(next\): model_version 'v9'.*loaded: v1, v2"):
        await store.set(definition(shadow="v9"), loaded_models={"v1", "v2"})
    with pytest.raises(DefinitionError, match=r"variants\[0\]\.weight"):
        await store.set(json.dumps({**definition(), "variants": [{**definition()["variants"][0], "weight": -1}]}),
                        loaded_models={"v1"})
    with pytest.raises(DefinitionError, match="sum to a positive number"):
        await store.set(definition(weights=(0, 0)), loaded_models={"v1"})
    assert await store.list() == [] and await store.version() == 0

    await store.set(definition(), loaded_models={"v1"})
    with pytest.raises(ExperimentConflict, match="experiment 'ab' is running"):
        await store.set(definition("other"), loaded_models={"v1"})
    await store.set(definition(weights=(10, 90)), loaded_models={"v1"})  # replacing itself is fine
    with pytest.raises(UnknownExperiment):
        await store.promote("nope", "control")
    with pytest.raises(DefinitionError, match="no variant 'nope'"):
        await store.promote("ab", "nope")
    assert (await store.get("ab")).running


async def test_watcher_keeps_the_previous_definition_when_a_new_one_is_malformed(redis_client):
    store = ExperimentStore(redis_client)
    errors: list[str] = []
    loaded = {"v1"}

    async def loaded_models():
        return loaded

    watcher = ExperimentWatcher(store, loaded_models=loaded_models, on_error=errors.append)
    assert (await watcher.poll_once()).experiment is None
    await store.set(definition(), loaded_models=loaded)
    live = await watcher.poll_once()
    assert live.experiment.name == "ab" and live.assigner is not None

    # Written past the store (by hand): a typo'd field. The previous definition stays live.
    bad = {**definition(weights=(1, 99)), "varaints": []}
    await redis_client.hset(DEFINITIONS, "ab", json.dumps(bad))
    await redis_client.incr(b"ss:v1:{experiments}:version")
    after = await watcher.poll_once()
    assert after.experiment == live.experiment and errors == ["malformed"]
    assert isinstance((await store.list())[0], Malformed)
    await watcher.poll_once()
    assert errors == ["malformed"]  # counted once per bad definition, not per poll

    # A version the ranker has not loaded (the ranker dropped it after set): refused too.
    await redis_client.hset(DEFINITIONS, "ab", json.dumps(definition(control="v7")))
    await redis_client.incr(b"ss:v1:{experiments}:version")
    assert (await watcher.poll_once()).experiment == live.experiment and errors == ["malformed", "model_not_loaded"]

    # A good one replaces it; promotion ends it and sets the default.
    await store.set(definition(weights=(90, 10)), loaded_models=loaded)
    assert [v.weight for v in (await watcher.poll_once()).experiment.served] == [90, 10]
    await store.promote("ab", "rule")
    final = await watcher.poll_once()
    assert final.experiment is None and final.default.kind == "trending"


async def test_the_promote_command_refuses_an_unknown_experiment_and_a_model_without_its_directory(redis_client):
    from services.experiments.cli import promote

    store = ExperimentStore(redis_client)
    with pytest.raises(UnknownExperiment, match="no experiment named 'nope'"):
        await promote(store, "nope", "control", None)
    await store.set(definition("needs-dir"), loaded_models={"v1"})
    with pytest.raises(DefinitionError, match="give the models directory"):
        await promote(store, "needs-dir", "control", None)
    assert (await store.get("needs-dir")).running  # nothing was promoted
