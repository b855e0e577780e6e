"""The attribution agent in the features worker (a real process on the session's broker and
Redis): events that name lists the worker has not seen yet wait, and count for their lists
when the lists come; the counts in Redis and on /metrics equal the oracle."""
import asyncio
import numpy as np
import pytest

from shopstream.events.v1 import events_pb2

from services.contract.producer import EventProducer, ensure_topics
from services.features.attribution_store import read_experiment, read_unattributed
from services.gateway.impressions import KafkaImpressions
from services.stack.local import ServiceStack
from prometheus_client.parser import text_string_to_metric_families

from services.stack.processes import metrics_text
from support.attribution_oracle import shop
from support.toy_bundle import publish_toy_bundle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
FIELDS = ("impressions", "clicks", "clicked_lists", "add_to_carts", "purchases", "purchased_lists", "revenue_micros")


@pytest.fixture
def worker(kafka_bootstrap, redis_url, tmp_path):
    ensure_topics(kafka_bootstrap, partitions=2)
    models = tmp_path / "models"
    publish_toy_bundle(models, ["a", "b", "c"], np.random.default_rng(0).normal(size=(3, 4)))
    stack = ServiceStack(kafka_bootstrap, redis_url, models, tmp_path / "logs", partitions=2, extra_env={
        "SHOPSTREAM_FEATURES_APP_ID": f"attribution-{tmp_path.name}"[:60],
        "SHOPSTREAM_FEATURES_SESSION_TIMEOUT_S": "4", "SHOPSTREAM_FEATURES_HEARTBEAT_INTERVAL_S": "1",
        "SHOPSTREAM_FEATURES_REBALANCE_TIMEOUT_S": "4"})
    stack.start_service("features", timeout=90)
    yield stack
    stack.stop()


def sample(text: str, name: str, **labels) -> float:
    """The sample ``name`` whose labels include ``labels`` (0 when there is none)."""
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and labels.items() <= s.labels.items())


async def wait_for(check, timeout: float, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def publish_as_the_gateway(bootstrap: str, impressions) -> None:
    """Through the gateway's producer: ImpressionBatch records, one per partition."""
    producer = KafkaImpressions(bootstrap, 10.0)
    try:
        assert await producer.send(impressions) == len(impressions)
    finally:
        await producer.close()


@pytest.mark.parametrize("records", ["one list per record", "batches"])
async def test_events_before_their_lists_are_attributed_when_the_lists_come(worker, kafka_bootstrap, redis_client,
                                                                            records):
    script = shop(users=4, lists_per_user=5, implicit=False)
    expected = {v: {f: c[f] for f in FIELDS} for v, c in script.expected.items()}
    named = sum(1 for ev in script.events if ev.recommendation_id)

    async def totals():
        series = await read_experiment(redis_client, script.experiment)
        return {v: {f: int(s.totals().get(f, 0)) for f in FIELDS} for v, s in series.items()}

    async def waiting():  # every event read, none attributed: their lists are not there yet
        un = await read_unattributed(redis_client)
        return sum(n for k, n in un.items() if k.startswith("unknown_recommendation:")
                   and not k.endswith("revenue_micros")) >= named

    with EventProducer(kafka_bootstrap) as producer:
        script.publish_events(producer)
        await wait_for(waiting, 60, "the events counted as unattributed")
        assert await totals() == {}
        if records == "batches":  # a bad list among them is skipped alone
            bad = events_pb2.Impression(recommendation_id="no-variant", user_id=script.impressions[0].user_id)
            await publish_as_the_gateway(kafka_bootstrap, [bad, *script.impressions])
        else:
            script.publish_impressions(producer)

        async def attributed():
            return await totals() == expected
        await wait_for(attributed, 60, "the oracle's counts")

    text = await asyncio.to_thread(metrics_text, worker.ports["features_metrics"], 5)
    for variant, counts in script.expected.items():
        labels = {"experiment": script.experiment, "variant": variant}
        assert sample(text, "shopstream_attribution_clicks_total", **labels) == counts["clicks"]
        assert sample(text, "shopstream_attribution_impressions_total", **labels) == counts["impressions"]
        assert sample(text, "shopstream_attribution_revenue_total", **labels) == pytest.approx(
            counts["revenue_micros"] / 1e6)
    skipped = sample(text, "shopstream_attribution_records_skipped_total", reason="missing_variant")
    assert skipped == (1 if records == "batches" else 0)
    late = sample(text, "shopstream_attribution_late_attributed_total", type="click")
    assert late >= sum(c["clicks"] for c in script.expected.values())
