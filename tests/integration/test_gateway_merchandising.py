"""Rules with parameters, boosts, pins, reasons, personalize=false and ForgetUser through the
gateway: on the personalised path and on the fallback with the ranker down (real ranker,
gateway, Redis; events are written to Redis directly, the worker has its own tests)."""
from __future__ import annotations

import contextlib

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shopstream.catalog.v1 import catalog_pb2
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.stores import keys
from services.common.stores.catalog import RedisCatalogStore
from services.common.stores.user_state import EventWrite, RedisUserStateStore
from services.gateway.main import build, running
from services.gateway.settings import GatewaySettings
from services.stack.embedded import free_port
from support.ranker_harness import ranker_server
from support.toy_bundle import publish_toy_bundle

pytestmark = pytest.mark.integration
HANG_GUARD_S = 30

CATEGORIES = {"s": "shoes", "h": "hats", "b": "bags"}
ITEMS = [f"{p}{n}" for p in CATEGORIES for n in range(1, 7)]
# Brand "acme" for items 1-3 of every category, "zen" for 4-6; price 10 x the number; trending favours bags.
TRENDING = {f"b{n}": 100.0 - n for n in range(1, 7)} | {f"s{n}": 50.0 - n for n in range(1, 7)}


def catalog() -> list[catalog_pb2.CatalogItem]:
    return [catalog_pb2.CatalogItem(item_id=i, title=f"The {CATEGORIES[i[0]][:-1]} #{i[1:]}",
                                    category=CATEGORIES[i[0]], brand="acme" if int(i[1:]) <= 3 else "zen",
                                    price=10.0 * int(i[1:]), in_stock=True) for i in ITEMS]


def vectors() -> np.ndarray:
    out = np.zeros((len(ITEMS), 3), dtype=np.float32)
    for row, item in enumerate(ITEMS):
        out[row, list(CATEGORIES).index(item[0])] = 1.0 + 0.1 * int(item[1:])
    return out


@pytest.fixture
async def world(tmp_path, redis_client):
    await RedisCatalogStore(redis_client).upsert(catalog())
    await redis_client.zadd(keys.TRENDING, TRENDING)
    # "fan" likes hats and bought h2
    await RedisUserStateStore(redis_client).apply_events(
        [EventWrite("f1", "fan", "h1", 1, 1000), EventWrite("f2", "fan", "h2", 4, 1001)])
    publish_toy_bundle(tmp_path, ITEMS, vectors())
    return tmp_path


class Clients:
    def __init__(self, channel):
        self.gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        self.merch = gateway_pb2_grpc.MerchandisingServiceStub(channel)
        self.privacy = gateway_pb2_grpc.PrivacyServiceStub(channel)

    async def recommend(self, **fields) -> gateway_pb2.RecommendResponse:
        return await self.gateway.Recommend(gateway_pb2.RecommendRequest(**fields), timeout=HANG_GUARD_S)


@contextlib.asynccontextmanager
async def gateway_at(ranker_addr: str, redis_url: str):
    settings = GatewaySettings(addr="127.0.0.1:0", ranker_addr=ranker_addr, redis_url=redis_url, auth="disabled",
                               readiness_interval_s=0.05, grace_s=0.0, redis_timeout_s=5.0,
                               impressions_enabled=False)
    async with running(settings, build(settings)) as gateway:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            async for reply in health.Watch(health_pb2.HealthCheckRequest(), timeout=HANG_GUARD_S):
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            yield Clients(channel)


@contextlib.asynccontextmanager
async def serving(world, redis_url, ranker_up: bool):
    if ranker_up:
        async with ranker_server(world, redis_url) as addr, gateway_at(addr, redis_url) as clients:
            yield clients
    else:
        async with gateway_at(f"127.0.0.1:{free_port()}", redis_url) as clients:
            yield clients


def ids(resp) -> list[str]:
    return [i.item_id for i in resp.items]


def params(**values) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


CHEAP_ZEN = 'INCLUDE ItemID WHERE Items.brand IN ($brands) AND Items.price <= $max'


@pytest.mark.parametrize("ranker_up", [True, False], ids=["personalized", "ranker-down"])
async def test_rules_boosts_and_pins_hold_on_every_path(world, redis_url, ranker_up):
    async with serving(world, redis_url, ranker_up) as c:
        created = await c.merch.CreateFilter(gateway_pb2.CreateFilterRequest(
            filter=gateway_pb2.FilterExpression(name="cheap-zen", expression=CHEAP_ZEN)), timeout=HANG_GUARD_S)
        assert list(created.parameters) == ["brands", "max"]
        listed = await c.merch.ListFilters(gateway_pb2.ListFiltersRequest(), timeout=HANG_GUARD_S)
        assert [f.name for f in listed.filters] == ["cheap-zen"]

        resp = await c.recommend(user_id="fan", k=4, filter_name="cheap-zen",
                                 filter_params=params(brands=["zen"], max=50))
        expected_strategy = gateway_pb2.STRATEGY_PERSONALIZED if ranker_up else gateway_pb2.STRATEGY_TRENDING
        assert resp.strategy == expected_strategy and resp.degraded == (not ranker_up)
        # zen and price <= 50: items 4 and 5 of each category; k=4 of the 6 eligible come back
        assert len(resp.items) == 4 and all(i[1:] in ("4", "5") for i in ids(resp)), ids(resp)

        boosted = await c.recommend(user_id="fan", k=3, boosts=[gateway_pb2.Boost(field="category", values=["shoes"],
                                                                                  weight=1000)])
        assert [i[0] for i in ids(boosted)] == ["s", "s", "s"], ids(boosted)

        pinned = await c.recommend(user_id="fan", k=4, pins=[gateway_pb2.Pin(item_id="b6", position=1),
                                                             gateway_pb2.Pin(item_id="h2", position=0)])
        assert ids(pinned)[1] == "b6" and len(pinned.items) == 4
        assert "h2" not in ids(pinned)  # bought: a pin never shows what the filters exclude
        assert pinned.items[1].reason.kind == gateway_pb2.REASON_KIND_PINNED

        capped = await c.recommend(user_id="fan", k=4, max_per_category=2)
        cats = [i[0] for i in ids(capped)]
        assert len(cats) == 4 and max(cats.count(x) for x in set(cats)) == 2, cats

        assert (await c.merch.DeleteFilter(gateway_pb2.DeleteFilterRequest(name="cheap-zen"),
                                           timeout=HANG_GUARD_S)).deleted


async def test_reasons_name_a_history_item_or_say_why_not(world, redis_url):
    async with serving(world, redis_url, ranker_up=True) as c:
        resp = await c.recommend(user_id="fan", k=5)
        assert resp.strategy == gateway_pb2.STRATEGY_PERSONALIZED
        for item in resp.items:
            assert item.reason.kind == gateway_pb2.REASON_KIND_BECAUSE_YOU_INTERACTED
            assert item.reason.evidence_item_id in {"h1", "h2"}
            assert item.reason.evidence_title in item.reason.text
        newcomer = await c.recommend(user_id="new-visitor", k=3)
        assert {i.reason.kind for i in newcomer.items} == {gateway_pb2.REASON_KIND_TRENDING_IN_CATEGORY}
        assert newcomer.items[0].reason.text == "Trending in bags"
        similar = await c.gateway.SimilarItems(gateway_pb2.SimilarItemsRequest(item_id="h1", k=2), timeout=HANG_GUARD_S)
        assert all(i.reason.text == "Similar to The hat #1" for i in similar.items)


@pytest.mark.parametrize("fields, code, words", [
    ({"filter_name": "nope"}, grpc.StatusCode.NOT_FOUND, "no filter named 'nope'"),
    ({"filter_params": params(max=1)}, grpc.StatusCode.INVALID_ARGUMENT, "filter_params given without filter_name"),
    ({"pins": [gateway_pb2.Pin(item_id="s1", position=9)]}, grpc.StatusCode.INVALID_ARGUMENT,
     "pins[0].position must be between 0 and k-1"),
    ({"diversity": -0.5}, grpc.StatusCode.INVALID_ARGUMENT, "diversity must be between 0 and 1"),
    ({"boosts": [gateway_pb2.Boost(field="category", values=[], weight=1)]}, grpc.StatusCode.INVALID_ARGUMENT,
     "boosts[0].values is empty"),
])
async def test_bad_merchandising_requests(world, redis_url, fields, code, words):
    async with serving(world, redis_url, ranker_up=False) as c:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.recommend(user_id="fan", k=3, **fields)
        assert err.value.code() == code and words in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.merch.CreateFilter(gateway_pb2.CreateFilterRequest(filter=gateway_pb2.FilterExpression(
                name="bad", expression="EXCLUDE ItemID WHERE Items.prize > 1")), timeout=HANG_GUARD_S)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("line 1, column 28: unknown field Items.prize")


async def test_personalize_false_and_forget_user(world, redis_url, redis_client):
    async with serving(world, redis_url, ranker_up=True) as c:
        anonymous = await c.recommend(user_id="fan", k=3, personalize=False)
        assert anonymous.strategy == gateway_pb2.STRATEGY_TRENDING and not anonymous.degraded
        assert ids(anonymous) == ["b1", "b2", "b3"]  # trending, with nothing of the fan's excluded or read
        assert (await c.recommend(user_id="fan", k=3)).strategy == gateway_pb2.STRATEGY_PERSONALIZED

        forgotten = await c.privacy.ForgetUser(gateway_pb2.ForgetUserRequest(user_id="fan"), timeout=HANG_GUARD_S)
        assert forgotten.keys_deleted >= 3
        assert await redis_client.keys(b"ss:v1:{u:fan}:*") == [keys.forgotten("fan")]
        after = await c.recommend(user_id="fan", k=3)
        newcomer = await c.recommend(user_id="someone-new", k=3)
        assert after.strategy == gateway_pb2.STRATEGY_TRENDING and ids(after) == ids(newcomer)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.privacy.ForgetUser(gateway_pb2.ForgetUserRequest(user_id=""), timeout=HANG_GUARD_S)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
