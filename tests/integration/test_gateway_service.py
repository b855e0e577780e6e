"""The gateway as a real gRPC server on 127.0.0.1:0, calling a real ranker server
(or a closed port, or a slow one), with real (embedded) Redis and Kafka."""
from __future__ import annotations

import asyncio
import contextlib

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from shopstream.catalog.v1 import catalog_pb2
from shopstream.events.v1 import events_pb2
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from support.kafka import read_topic_async
from support.ranker_harness import ranker_server
from support.toy_bundle import publish_toy_bundle

from services.contract import topics
from services.stack.embedded import free_port
from services.common.stores.catalog import RedisCatalogStore
from services.common.stores.user_state import EventWrite, RedisUserStateStore
from services.gateway.main import build, running
from services.gateway.settings import GatewaySettings
from services.contract.limits import MAX_ID_CHARS
from services.contract.producer import ensure_topics
from services.ranker.servicer import RankerServicer

pytestmark = pytest.mark.integration

# Bounds only a hang would reach; no outcome depends on them.
HANG_GUARD_S = 30

CATEGORIES = {"s": "shoes", "h": "hats", "b": "bags"}
ITEMS = [f"{p}{n}" for p in CATEGORIES for n in range(1, 5)]
OUT_OF_STOCK = {"t3"}
TRENDING = {"t1": 50.0, "t2": 40.0, "t3": 30.0, "h1": 20.0, "b1": 10.0}  # t*: new items the model does not know


def vectors() -> np.ndarray:
    out = np.zeros((len(ITEMS), 3), dtype=np.float32)
    for row, item in enumerate(ITEMS):
        out[row, list(CATEGORIES).index(item[0])] = 1.0 + 0.1 * int(item[1:])
    return out


class HeldStates:
    """The ranker's user state store, able to hold every read until the test releases it.

    ``hold()`` arms it (after the ranker is ready, so that start-up is never held);
    ``arrived`` is set when a held read comes in.
    """

    def __init__(self, inner) -> None:
        self._inner = inner
        self._held = False
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    def hold(self) -> None:
        self._held = True

    async def get_states(self, *args, **kwargs):
        if self._held:
            self.arrived.set()
            await self.release.wait()
        return await self._inner.get_states(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class NoKafka:
    """TrackEvents is not exercised by a test that uses this; anything else must not publish."""

    def send_events(self, events, wait=True):
        raise AssertionError("unexpected publish")

    def close(self) -> None:
        pass


class CountingRanker:
    """The gateway's RankerClient, with ``all_in`` set once ``expected`` Rank calls have come in."""

    def __init__(self, inner, expected: int) -> None:
        self._inner = inner
        self._expected = expected
        self.calls = 0
        self.all_in = asyncio.Event()

    async def rank(self, request, timeout):
        self.calls += 1
        if self.calls >= self._expected:
            self.all_in.set()
        return await self._inner.rank(request, timeout)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def gateway_settings(ranker_addr: str, redis_url: str, **overrides) -> GatewaySettings:
    # Redis reads get a bound that only a hang reaches (a loaded machine must not turn a
    # slow read into UNAVAILABLE); no test here is about Redis timeouts.
    # No API tokens here (tests/integration/test_gateway_security.py has them).
    overrides = {"readiness_interval_s": 0.05, "grace_s": 0.0, "redis_timeout_s": 5.0, "auth": "disabled",
                 **overrides}
    return GatewaySettings(addr="127.0.0.1:0", ranker_addr=ranker_addr, redis_url=redis_url, **overrides)


def without_kafka(settings: GatewaySettings):
    """The gateway's own build, with a publisher that refuses to publish."""
    deps = build(settings)
    deps.publisher = NoKafka()
    return deps


async def until_serving(health) -> None:
    """Returns once the health service reports SERVING (a Watch stream: no polling)."""
    async for reply in health.Watch(health_pb2.HealthCheckRequest(), timeout=HANG_GUARD_S):
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
    pytest.fail("the health stream ended before SERVING")


@contextlib.asynccontextmanager
async def gateway_server(settings: GatewaySettings, deps=None):
    """The gateway, started only through main.running, once it reports SERVING.

    The catalog's first load is held until the test has seen NOT_SERVING, so that check
    does not race the readiness watcher.
    """
    deps = without_kafka(settings) if deps is None else deps
    first_load = asyncio.Event()
    refresh = deps.catalog.refresh

    async def refresh_after_first_load():
        await first_load.wait()
        return await refresh()

    deps.catalog.refresh = refresh_after_first_load
    async with running(settings, deps) as gateway:
        client = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
        try:
            health = health_pb2_grpc.HealthStub(client)
            assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=HANG_GUARD_S)).status == \
                health_pb2.HealthCheckResponse.NOT_SERVING
            first_load.set()
            await until_serving(health)
            yield gateway_pb2_grpc.GatewayServiceStub(client)
        finally:
            await client.close()


@pytest.fixture
async def world(tmp_path, redis_client):
    """Catalog, trending and two users in Redis; a published model bundle."""
    items = [catalog_pb2.CatalogItem(item_id=i, category=CATEGORIES[i[0]], in_stock=True) for i in ITEMS]
    items += [catalog_pb2.CatalogItem(item_id=t, category="shoes", in_stock=t not in OUT_OF_STOCK)
              for t in ("t1", "t2", "t3")]
    await RedisCatalogStore(redis_client).upsert(items)
    await redis_client.zadd(b"ss:v1:trending", TRENDING)
    states = RedisUserStateStore(redis_client)
    # "buyer" likes hats and bought t1, the top trending item
    await states.apply_events([EventWrite("e1", "buyer", "h1", 1, 1000), EventWrite("e2", "buyer", "t1", 4, 1001)])
    publish_toy_bundle(tmp_path, ITEMS, vectors())
    return tmp_path


def ids(response) -> list[str]:
    return [i.item_id for i in response.items]


def closed_port_addr() -> str:
    return f"127.0.0.1:{free_port()}"


async def test_personalized_when_the_ranker_answers(world, redis_client, redis_url):
    async with ranker_server(world, redis_url) as addr, \
            gateway_server(gateway_settings(addr, redis_url)) as gw:
        resp = await gw.Recommend(gateway_pb2.RecommendRequest(user_id="buyer", k=3), timeout=HANG_GUARD_S)
        assert resp.strategy == gateway_pb2.STRATEGY_PERSONALIZED and not resp.degraded
        assert resp.model_version.startswith("v")
        assert ids(resp) == ["h4", "h3", "h2"]

        # Only 4 hats exist and h1 is seen: the model gives 3, trending pads (purchased t1 excluded).
        padded = await gw.Recommend(gateway_pb2.RecommendRequest(user_id="buyer", k=5, filters=gateway_pb2.RecommendFilters(
            include_categories=["hats", "shoes"], exclude_seen=True, exclude_item_ids=["s4", "s3", "s2", "s1"])),
            timeout=HANG_GUARD_S)
        assert padded.strategy == gateway_pb2.STRATEGY_PERSONALIZED
        # h1 seen, t1 seen and purchased, t3 out of stock, bags filtered: only t2 is left to pad with
        assert ids(padded) == ["h4", "h3", "h2", "t2"]
        scores = [i.score for i in padded.items]
        assert scores == sorted(scores, reverse=True)


def batch_calls() -> tuple[float, float]:
    """(RankBatch calls, requests in them) the gateway has sent so far in this process."""
    get = REGISTRY.get_sample_value
    return (get("shopstream_gateway_ranker_batch_requests_count") or 0.0,
            get("shopstream_gateway_ranker_batch_requests_sum") or 0.0)


async def test_concurrent_recommends_share_rank_batch_calls(world, redis_client, redis_url):
    # The ranker holds the first RankBatch until the other 19 Recommend calls are in the
    # gateway's ranker client, so the first call is still out when the others arrive.
    states: list[HeldStates] = []
    async with ranker_server(world, redis_url,
                             wrap_states=lambda inner: states.append(HeldStates(inner)) or states[0]) as addr:
        settings = gateway_settings(addr, redis_url, ranker_timeout_s=HANG_GUARD_S)
        deps = without_kafka(settings)
        ranker = deps.ranker = CountingRanker(deps.ranker, expected=20)
        async with gateway_server(settings, deps) as gw:
            (held,) = states
            held.hold()
            calls_before, requests_before = batch_calls()

            def recommend():
                return asyncio.ensure_future(
                    gw.Recommend(gateway_pb2.RecommendRequest(user_id="buyer", k=3), timeout=HANG_GUARD_S))

            try:
                async with asyncio.timeout(HANG_GUARD_S):
                    first = recommend()
                    await held.arrived.wait()  # the first RankBatch is at the ranker, alone...
                    others = [recommend() for _ in range(19)]
                    await ranker.all_in.wait()  # ...and the other 19 have reached the client
            finally:
                held.release.set()
            replies = await asyncio.gather(first, *others)
            calls, requests = batch_calls()
    assert all(r.strategy == gateway_pb2.STRATEGY_PERSONALIZED and ids(r) == ["h4", "h3", "h2"] for r in replies)
    assert requests - requests_before == 20
    assert calls - calls_before == 2  # the first alone (nothing waits for batch-mates), then the other 19


async def test_a_ranker_without_rank_batch_gets_unary_calls(world, redis_client, redis_url, monkeypatch):
    async def unimplemented(self, request, context):  # what a ranker from before RankBatch answers
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

    monkeypatch.setattr(RankerServicer, "RankBatch", unimplemented)
    async with ranker_server(world, redis_url) as addr, \
            gateway_server(gateway_settings(addr, redis_url)) as gw:
        for _ in range(2):  # the first call finds out, the second goes unary straight away
            resp = await gw.Recommend(gateway_pb2.RecommendRequest(user_id="buyer", k=3), timeout=HANG_GUARD_S)
            assert resp.strategy == gateway_pb2.STRATEGY_PERSONALIZED and not resp.degraded
            assert ids(resp) == ["h4", "h3", "h2"]


async def test_unknown_user_gets_trending_not_degraded(world, redis_client, redis_url):
    async with ranker_server(world, redis_url) as addr, \
            gateway_server(gateway_settings(addr, redis_url)) as gw:
        resp = await gw.Recommend(gateway_pb2.RecommendRequest(user_id="new-visitor", k=4), timeout=HANG_GUARD_S)
        assert resp.strategy == gateway_pb2.STRATEGY_TRENDING and not resp.degraded
        assert ids(resp) == ["t1", "t2", "h1", "b1"]  # t3 out of stock


async def test_ranker_down_degrades_to_trending_within_the_deadline(world, redis_client, redis_url):
    # The gateway's ranker deadline is far away: "ranker unavailable" (not "deadline exceeded")
    # shows that a refused connection degrades at once instead of waiting for a deadline.
    settings = gateway_settings(closed_port_addr(), redis_url, ranker_timeout_s=HANG_GUARD_S / 2)
    async with gateway_server(settings) as gw:
        resp = await gw.Recommend(gateway_pb2.RecommendRequest(user_id="buyer", k=3), timeout=HANG_GUARD_S)
        assert resp.strategy == gateway_pb2.STRATEGY_TRENDING
        assert resp.degraded and resp.degraded_reason == "ranker unavailable"
        assert ids(resp) == ["t2", "h1", "b1"]  # the buyer's purchase t1 is excluded

        # Fewer trending items than k: padded from the in-stock catalog.
        resp = await gw.Recommend(gateway_pb2.RecommendRequest(user_id="buyer", k=10), timeout=HANG_GUARD_S)
        assert len(resp.items) == 10 and "t1" not in ids(resp) and "t3" not in ids(resp)
        assert ids(resp)[:3] == ["t2", "h1", "b1"]

        similar = await gw.SimilarItems(gateway_pb2.SimilarItemsRequest(item_id="s1", k=3), timeout=HANG_GUARD_S)
        assert similar.degraded and similar.degraded_reason == "ranker unavailable"
        assert ids(similar) == ["t1", "t2", "s2"]  # same category (shoes), trending first, s1 itself excluded


async def test_slow_ranker_hits_the_gateway_deadline(world, redis_client, redis_url):
    # The ranker never answers (its state reads are held until the end): every reply below is
    # the gateway giving up on a deadline.
    states: list[HeldStates] = []
    async with ranker_server(world, redis_url,
                             wrap_states=lambda inner: states.append(HeldStates(inner)) or states[0]) as addr:
        (held,) = states
        held.hold()
        try:
            async with gateway_server(gateway_settings(addr, redis_url, ranker_timeout_s=0.1)) as gw:
                resp = await gw.Recommend(gateway_pb2.RecommendRequest(user_id="buyer", k=2), timeout=HANG_GUARD_S)
                assert held.arrived.is_set()  # the ranker was reached: slow, not down
                assert resp.degraded and resp.degraded_reason == "ranker deadline exceeded"
                assert ids(resp) == ["t2", "h1"]
            # The client's own deadline bounds the ranker call too: here the gateway's own bound
            # is past the client's deadline, so only the client's (less the margin) can end it.
            # The margin leaves the fallback 5 s of the client's 6.
            settings = gateway_settings(addr, redis_url, ranker_timeout_s=HANG_GUARD_S, deadline_margin_s=5.0)
            async with gateway_server(settings) as gw:
                resp = await gw.Recommend(gateway_pb2.RecommendRequest(user_id="buyer", k=2), timeout=6.0)
                assert resp.degraded and resp.degraded_reason == "ranker deadline exceeded"
        finally:
            held.release.set()


async def test_similar_items_and_validation(world, redis_client, redis_url):
    async with ranker_server(world, redis_url) as addr, \
            gateway_server(gateway_settings(addr, redis_url)) as gw:
        resp = await gw.SimilarItems(gateway_pb2.SimilarItemsRequest(item_id="b1", k=3), timeout=HANG_GUARD_S)
        assert not resp.degraded and set(ids(resp)) == {"b2", "b3", "b4"}
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await gw.SimilarItems(gateway_pb2.SimilarItemsRequest(item_id="no-such-item", k=3), timeout=HANG_GUARD_S)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await gw.SimilarItems(gateway_pb2.SimilarItemsRequest(item_id="b1", filters=gateway_pb2.RecommendFilters(
                include_categories=["bags"] * 101)), timeout=HANG_GUARD_S)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "filters.include_categories has 101 entries" in err.value.details()

        for request, message in [
            (gateway_pb2.RecommendRequest(user_id="", k=3), "user_id is required"),
            (gateway_pb2.RecommendRequest(user_id="x" * (MAX_ID_CHARS + 1), k=3), f"user_id must be at most {MAX_ID_CHARS} characters"),
            (gateway_pb2.RecommendRequest(user_id="u", k=101), "k must be between 1 and 100"),
            (gateway_pb2.RecommendRequest(user_id="u", filters=gateway_pb2.RecommendFilters(
                exclude_item_ids=[str(i) for i in range(501)])), "at most 500 allowed"),
            (gateway_pb2.RecommendRequest(user_id="u", filters=gateway_pb2.RecommendFilters(
                include_categories=["shoes"] * 100_000)),
             "filters.include_categories has 100000 entries, at most 100 allowed"),
            (gateway_pb2.RecommendRequest(user_id="u", filters=gateway_pb2.RecommendFilters(
                exclude_categories=["x" * 2000])), "filters.exclude_categories entries must be at most 1024"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await gw.Recommend(request, timeout=HANG_GUARD_S)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in err.value.details()


def event(n: int, **fields) -> events_pb2.Event:
    base = dict(event_id=f"track-{n}", user_id="shopper", item_id="s1", type=events_pb2.EVENT_TYPE_VIEW,
                occurred_at=Timestamp(seconds=1_700_000_000 + n))
    base.update(fields)
    return events_pb2.Event(**base)


async def test_track_events_publishes_to_kafka_all_or_nothing(world, redis_client, redis_url, kafka_bootstrap):
    await asyncio.to_thread(ensure_topics, kafka_bootstrap, 1)
    settings = gateway_settings(closed_port_addr(), redis_url, kafka_bootstrap_servers=kafka_bootstrap)
    async with gateway_server(settings, build(settings)) as gw:  # the gateway's own Kafka producer
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await gw.TrackEvents(gateway_pb2.TrackEventsRequest(events=[event(1), event(2, user_id="")]),
                                 timeout=HANG_GUARD_S)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "events[1]" in err.value.details() and "missing_user_id" in err.value.details()

        resp = await gw.TrackEvents(gateway_pb2.TrackEventsRequest(events=[event(3), event(4)]), timeout=HANG_GUARD_S)
        assert resp.accepted == 2
        empty = await gw.TrackEvents(gateway_pb2.TrackEventsRequest(), timeout=HANG_GUARD_S)
        assert empty.accepted == 0

    def event_ids(records) -> list[str]:  # other tests publish garbage on purpose: skip it
        ids = []
        for record in records:
            try:
                ids.append(events_pb2.Event.FromString(record.value).event_id)
            except DecodeError:
                pass
        return ids

    published = event_ids(await read_topic_async(kafka_bootstrap, topics.EVENTS))
    assert "track-3" in published and "track-4" in published
    assert "track-1" not in published and "track-2" not in published  # nothing from the rejected batch


async def test_track_events_kafka_down_is_unavailable(world, redis_client, redis_url):
    # The gateway's own Kafka client, and no broker behind the address. UNAVAILABLE (not the
    # client's DEADLINE_EXCEEDED) shows that the publish gave up on its own bound.
    settings = gateway_settings(closed_port_addr(), redis_url, kafka_bootstrap_servers=closed_port_addr(),
                                kafka_timeout_s=0.5)
    async with gateway_server(settings, build(settings)) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await gw.TrackEvents(gateway_pb2.TrackEventsRequest(events=[event(9)]), timeout=HANG_GUARD_S)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_undecodable_request_bytes_are_invalid_argument(world, redis_client, redis_url):
    settings = gateway_settings(closed_port_addr(), redis_url)
    async with running(settings, without_kafka(settings)) as gateway, \
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        for method in ("Recommend", "SimilarItems", "TrackEvents"):
            call = channel.unary_unary(f"/shopstream.gateway.v1.GatewayService/{method}")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(b"\x0a\xff\xff", timeout=HANG_GUARD_S)  # a field whose length runs past the end
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert err.value.details().startswith(f"the request is not a valid shopstream.gateway.v1.{method}")


async def test_track_events_bounds_occurred_at(world, redis_client, redis_url):
    async with gateway_server(gateway_settings(closed_port_addr(), redis_url)) as gw:  # NoKafka: nothing published
        for seconds, reason in [(1_000_000_000_000, "occurred_at_in_future"),  # the year 33658
                                (-100 * 365 * 86400, "occurred_at_too_old")]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await gw.TrackEvents(gateway_pb2.TrackEventsRequest(
                    events=[event(1), event(2, occurred_at=Timestamp(seconds=seconds))]), timeout=HANG_GUARD_S)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "events[1]" in err.value.details() and reason in err.value.details()


async def test_a_5ms_client_deadline_is_never_unavailable(world, redis_client, redis_url):
    # Too short for the ranker (less than the deadline margin) and for most reads: the answer is
    # a degraded trending list when the reads make it in time, else DEADLINE_EXCEEDED: the
    # stores are fine, the client ran out of time (tests/unit/gateway/test_servicer.py pins
    # the mapping itself).
    async with ranker_server(world, redis_url) as addr, gateway_server(gateway_settings(addr, redis_url)) as gw:
        for _ in range(20):
            try:
                resp = await gw.Recommend(gateway_pb2.RecommendRequest(user_id="buyer", k=3), timeout=0.005)
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.details()
            else:
                assert resp.degraded and resp.degraded_reason == "client deadline too short for the ranker"


def recommend_codes() -> dict[str, float]:
    """The gateway's server-side Recommend status codes so far in this process."""
    out: dict[str, float] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "shopstream_gateway_rpc_requests_total" and sample.labels["method"] == "Recommend":
                out[sample.labels["code"]] = sample.value
    return out


async def test_reads_cut_short_by_the_client_deadline_are_not_store_outages(world, redis_client, redis_url):
    # The gateway's user state reads are held, so every call runs into the client's deadline
    # (the ranker is down: trending, which needs the buyer's purchases). The server must end
    # them as DEADLINE_EXCEEDED (or CANCELLED when gRPC's own deadline fires first), never
    # as UNAVAILABLE: Redis is fine, the client ran out of time.
    settings = gateway_settings(closed_port_addr(), redis_url, redis_timeout_s=HANG_GUARD_S)
    deps = without_kafka(settings)
    held = deps.user_states = HeldStates(deps.user_states)
    try:
        async with gateway_server(settings, deps) as gw:
            held.hold()
            before = recommend_codes()
            calls = 5
            for _ in range(calls):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await gw.Recommend(gateway_pb2.RecommendRequest(user_id="buyer", k=3), timeout=0.2)
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

            def ended() -> float:
                return sum(recommend_codes().values()) - sum(before.values())

            async with asyncio.timeout(HANG_GUARD_S):  # the server side may finish just after the client
                while ended() < calls:
                    await asyncio.sleep(0.01)
            after = recommend_codes()
            assert after.get("UNAVAILABLE", 0) == before.get("UNAVAILABLE", 0)
            assert (after.get("DEADLINE_EXCEEDED", 0) + after.get("CANCELLED", 0)
                    - before.get("DEADLINE_EXCEEDED", 0) - before.get("CANCELLED", 0)) == calls
    finally:
        held.release.set()
