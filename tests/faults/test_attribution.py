"""The attribution job under redelivery and SIGKILL: per-variant counts equal the oracle of
what was published (tests/support/attribution_oracle.py), exactly."""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from support.attribution_oracle import shop
from faults.harness import wait_until
from services.common.infra import connect_redis
from services.contract.producer import EventProducer
from services.features.attribution_store import read_experiment, read_unattributed

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]
FIELDS = ("impressions", "clicks", "clicked_lists", "add_to_carts", "carted_lists", "purchases",
          "purchased_lists", "revenue_micros")


def counts(url: str, experiment: str) -> tuple[dict, Counter]:
    async def read():
        client = connect_redis(url)
        try:
            series = await read_experiment(client, experiment)
            un = await read_unattributed(client)
        finally:
            await client.aclose()
        got = {v: Counter({**{f: int(s.totals().get(f, 0)) for f in FIELDS}, "users": s.users})
               for v, s in series.items()}
        return got, Counter({k: int(n) for k, n in un.items() if n})
    return asyncio.run(read())


def expected(script) -> dict:
    return {v: Counter({**{f: c[f] for f in FIELDS}, "users": c["users"]}) for v, c in script.expected.items()}


def matches(rig, script, unattributed_before: Counter = Counter()) -> bool:
    got, un = counts(rig.redis.url, script.experiment)
    return got == expected(script) and un - unattributed_before == script.unattributed


@pytest.mark.faults_fast
def test_attributed_counts_equal_the_oracle_with_duplicates_and_sigkill(rig):
    script = shop(users=8, lists_per_user=12)
    with EventProducer(rig.kafka.bootstrap_servers) as producer:
        script.publish_impressions(producer)
        # Lists first (as a storefront sees them before acting): then the window rule has them.
        wait_until(lambda: sum(c["impressions"] for c in counts(rig.redis.url, script.experiment)[0].values())
                   == len(script.impressions), 60, "every list counted")
        half = len(script.events) // 2
        script.publish_events(producer, script.events[:half])
        wait_until(lambda: counts(rig.redis.url, script.experiment)[0].get("control", Counter())["clicks"] > 0,
                   60, "attribution under way")
        rig.kill_worker()  # SIGKILL mid-run: what it had not committed comes again
        script.publish_events(producer, script.events[half:])
        script.publish_events(producer, script.events[: half // 2])  # delivered twice
        script.publish_impressions(producer)  # and the lists too
        rig.start_worker()
        wait_until(lambda: matches(rig, script), 90, "the counts of the oracle")
    got, un = counts(rig.redis.url, script.experiment)
    print(f"attribution after SIGKILL and duplicates: {dict(got)}; unattributed {dict(un)}")
    assert got == expected(script) and un == script.unattributed
