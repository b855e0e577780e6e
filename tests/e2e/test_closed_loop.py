"""The closed loop, measured against an oracle: simulated shoppers with known tastes drive an
A/B test between the trending rule and the trained model through the real gateway; the
attribution job's counts equal the shoppers' own log exactly, the report finds the model's
CTR higher with p < 0.05, and each variant's measured CTR is consistent with the ground truth
the simulator knows (the mean click probability of the lists that variant served)."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from shopstream.gateway.v1 import gateway_pb2

from services.common.infra import connect_redis
from services.experiments.cli import loaded_model_versions
from services.experiments.report import load_report
from services.experiments.stats import wilson
from services.experiments.store import ExperimentStore
from services.ingest.replay import replay
from services.simulator.journal import Journal
from services.simulator.runner import Simulation, SimulationConfig
from support.helpers import recommend, wait_for

pytestmark = pytest.mark.e2e

SHOPPERS = 60
LISTS_PER_SHOPPER = 40
# Calls at once: the gateway bounds each Redis read (100 ms) and ranker call (150 ms); a burst of
# 60 on a loaded 2-core machine runs past them (refusals, trending fallbacks in the model arm).
MAX_IN_FLIGHT = 6
# The ground truth is checked at z = 3.29 (99.9 %) rather than the report's 95 %: at 95 % two
# correct variants would fail together about one run in ten.
Z_GROUND_TRUTH = 3.29
COUNTED = ("impressions", "clicks", "add_to_carts", "purchases")


def _store_call(redis_url: str, work):
    async def run():
        client = connect_redis(redis_url)
        try:
            return await work(client)
        finally:
            await client.aclose()
    return asyncio.run(run())


@pytest.mark.timeout(600)
def test_ab_trending_vs_model_matches_the_shoppers_log(system, dataset, producer, tmp_path):
    shoppers = tuple(u for u, seq in dataset.sequences.items() if len(seq) >= 4)[:SHOPPERS]
    assert len(shoppers) == SHOPPERS
    # The shoppers' past, so the ranker knows them (the model arm personalizes known users).
    replay(producer, {u: dataset.sequences[u] for u in shoppers})
    wait_for(lambda: all(recommend(system.gateway, u).strategy == gateway_pb2.STRATEGY_PERSONALIZED
                         for u in shoppers), timeout=30.0, interval=0.2, what="every shopper personalized")

    name = f"e2e-ab-{uuid.uuid4().hex[:8]}"
    definition = {"name": name, "variants": [
        {"name": "trending", "kind": "trending", "weight": 50},
        {"name": "model", "kind": "model", "model_version": system.model_version, "weight": 50}]}
    loaded = loaded_model_versions(system.stack.ranker_addr)
    _store_call(system.redis, lambda r: ExperimentStore(r).set(definition, loaded))
    try:
        # A probe user outside the shoppers sees when the gateway serves the experiment; its
        # lists in the experiment are counted beside the shoppers' (it sends no events).
        probe = f"probe-{uuid.uuid4().hex[:8]}"
        probed: dict[str, int] = {}

        def probe_once():
            resp = recommend(system.gateway, probe)
            if resp.experiment == name:
                probed[resp.variant] = probed.get(resp.variant, 0) + 1
            return resp.experiment == name
        wait_for(probe_once, timeout=15.0, interval=0.1, what=f"the gateway serving experiment {name}")

        cfg = SimulationConfig(shoppers=SHOPPERS, users=shoppers, duration_s=0, lists_per_shopper=LISTS_PER_SHOPPER,
                               seed=13, think_s=0.0, session_gap_s=0.0, timeout_s=20.0,
                               max_in_flight=MAX_IN_FLIGHT)
        with Journal(tmp_path / "shoppers.jsonl") as journal:
            summary = asyncio.run(Simulation(system.stack.gateway_addr, dataset, cfg, journal).run())
        # On a loaded machine the gateway may refuse a Recommend (UNAVAILABLE: a store call ran
        # past its bound); such a call served nothing and logged no impression, so the counts
        # still compare exactly. Anything else (a TrackEvents failure, a client-side deadline
        # after which the gateway may still have served) would make the oracle ambiguous.
        errors = [r for r in journal.records if r["kind"] == "error"]
        ambiguous = [e for e in errors if (e["call"], e["code"]) != ("Recommend", "UNAVAILABLE")]
        assert not ambiguous, f"{len(ambiguous)} calls failed ambiguously, e.g. {ambiguous[:3]}"
        assert len(errors) <= 0.05 * SHOPPERS * LISTS_PER_SHOPPER, f"{len(errors)} failed calls, e.g. {errors[:3]}"
        assert summary.lists + len(errors) == SHOPPERS * LISTS_PER_SHOPPER
        assert set(summary.variants) == {"trending", "model"}

        expected = {v: {k: getattr(t, k) for k in COUNTED} for v, t in summary.variants.items()}
        for variant, n in probed.items():
            expected[variant]["impressions"] += n

        def attributed():
            report = _store_call(system.redis, lambda r: load_report(r, name, control="trending"))
            got = {row["variant"]: {k: int(row[k]) for k in COUNTED} for row in report["variants"]}
            return report if got == expected else None
        try:
            report = wait_for(attributed, timeout=60.0, interval=0.5, what="attributed counts = the shoppers' log")
        except AssertionError:
            report = _store_call(system.redis, lambda r: load_report(r, name, control="trending"))
            got = {row["variant"]: {k: int(row[k]) for k in COUNTED} for row in report["variants"]}
            raise AssertionError(f"attributed {got} != shoppers' log {expected}; unattributed "
                                 f"{report['unattributed']}") from None

        print(f"\nattributed = shoppers' log: {expected}")
        rows = {row["variant"]: row for row in report["variants"]}
        model, trending = rows["model"], rows["trending"]
        test = model["tests"]["ctr"]
        print(f"\nCTR trending {trending['ctr']['value']:.4f} (truth {summary.variants['trending'].expected_ctr:.4f}), "
              f"model {model['ctr']['value']:.4f} (truth {summary.variants['model'].expected_ctr:.4f}), "
              f"p = {test['p_value']:.3g} ({test['test']})")
        assert model["ctr"]["value"] > trending["ctr"]["value"]
        assert test["p_value"] < 0.05
        for variant, row in rows.items():
            truth = summary.variants[variant].expected_ctr
            successes, trials = row["ctr"]["successes"], row["ctr"]["trials"]
            # The report's 95 % interval, and the same interval at 99.9 % as the assertion.
            print(f"{variant}: truth {truth:.4f}, 95% [{row['ctr']['low']:.4f}, {row['ctr']['high']:.4f}]")
            wide = wilson(successes, trials, z=Z_GROUND_TRUTH)
            assert wide.low <= truth <= wide.high, (variant, truth, wide)
    finally:  # end the experiment (the model is already live), so later tests see no experiment
        _store_call(system.redis, lambda r: ExperimentStore(r).promote(name, "model"))
