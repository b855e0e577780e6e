"""Conformance suite for the state stores; every implementation runs it (today: Redis)."""
import numpy as np
import pytest
from shopstream.catalog.v1 import catalog_pb2

from services.common.stores import keys
from services.common.stores.catalog import RedisCatalogStore
from services.common.stores.trending import RedisTrendingStore
from services.common.stores.user_state import EmbeddingWrite, EventWrite, RedisUserStateStore

pytestmark = pytest.mark.integration

USER_STORES = {"redis": lambda client: RedisUserStateStore(client, history_cap=5, dedup_cap=100)}
TRENDING_STORES = {"redis": RedisTrendingStore}
CATALOG_STORES = {"redis": RedisCatalogStore}


@pytest.fixture(params=sorted(USER_STORES))
def users(request, redis_client):
    return USER_STORES[request.param](redis_client)


@pytest.fixture(params=sorted(TRENDING_STORES))
def trending(request, redis_client):
    return TRENDING_STORES[request.param](redis_client)


@pytest.fixture(params=sorted(CATALOG_STORES))
def catalog(request, redis_client):
    return CATALOG_STORES[request.param](redis_client)


def ev(n: int, user="u1", item=None, type_code=1) -> EventWrite:
    return EventWrite(f"{user}-e{n}", user, item or f"i{n}", type_code, 1_700_000_000_000 + n)


async def test_apply_is_idempotent_across_and_within_batches(users):
    batch = [ev(1), ev(2, type_code=4), ev(3, user="u2")]
    assert await users.apply_events(batch) == [True, True, True]
    assert await users.apply_events(batch) == [False, False, False]
    assert await users.apply_events([ev(4), ev(4)]) == [True, False]
    u1, u2 = await users.get_states(["u1", "u2"], history_len=10)
    assert u1.history == ["i1", "i2", "i4"]
    assert u1.purchased == {"i2"}
    assert u1.hist_version == 3
    assert u2.history == ["i3"] and u2.hist_version == 1


async def test_counters_count_each_event_once(users, redis_client):
    await users.apply_events([ev(1), ev(2, type_code=4)])
    await users.apply_events([ev(1), ev(2, type_code=4)])
    counts = await redis_client.hgetall(keys.counters("u1"))
    assert counts[b"events"] == b"2" and counts[b"view"] == b"1" and counts[b"purchase"] == b"1"
    assert counts[b"last_event_ms"] == b"1700000000002"


async def test_history_keeps_order_and_cap(users):
    await users.apply_events([ev(n) for n in range(1, 9)])
    (state,) = await users.get_states(["u1"], history_len=10)
    assert state.history == ["i4", "i5", "i6", "i7", "i8"]  # cap 5, oldest first
    (state,) = await users.get_states(["u1"], history_len=2)
    assert state.history == ["i7", "i8"]


async def test_unknown_user_is_empty(users):
    (state,) = await users.get_states(["nobody"], history_len=10)
    assert not state.known and state.hist_version == 0 and state.embedding is None


async def test_embeddings_roundtrip_and_staleness(users):
    await users.apply_events([ev(1), ev(2)])
    (state,) = await users.get_states(["u1"], 10)
    vec = np.arange(4, dtype=np.float32)
    await users.put_embeddings([EmbeddingWrite("u1", "m1", state.hist_version, vec)])
    (state,) = await users.get_states(["u1"], 10)
    np.testing.assert_array_equal(state.embedding_for("m1"), vec)
    assert state.embedding_for("m2") is None
    await users.apply_events([ev(3)])
    (state,) = await users.get_states(["u1"], 10)
    assert state.embedding_for("m1") is None  # history moved on


async def test_trending_record_and_decay(trending, redis_client):
    await trending.record([("a", 1), ("b", 4), ("a", 2)])
    assert await trending.top(5) == [("b", 8.0), ("a", 3.0)]
    assert await trending.decay(interval_s=60, half_life_s=60)
    assert not await trending.decay(interval_s=60, half_life_s=60)  # once per interval
    top = dict(await trending.top(5))
    assert top["b"] == pytest.approx(4.0) and top["a"] == pytest.approx(1.5)


async def test_catalog_upsert_and_snapshot(catalog):
    assert (await catalog.snapshot()).version == 0
    await catalog.upsert([catalog_pb2.CatalogItem(item_id="i1", category="c1", in_stock=True),
                          catalog_pb2.CatalogItem(item_id="i2", category="c2", in_stock=False)])
    await catalog.upsert([catalog_pb2.CatalogItem(item_id="i1", category="c9", in_stock=True)])
    snap = await catalog.snapshot()
    assert snap.version == 2 == await catalog.version()
    assert snap.category("i1") == "c9" and not snap.in_stock("i2") and snap.in_stock("unknown")


async def test_apply_round_trips_any_id_and_returns_states(users):
    # Ids are free text: unicode, spaces, JSON and control characters must survive the packing.
    odd = ["ünï cødé 🛒", 'q"uo\\te,[]{}', "tab\there\x1f\x1e\n", "", "i" * 256]
    batch = [EventWrite(f"odd-{n}-{item}", "u ⌘ odd", item or "empty", 4 if n == 0 else 1, 1_700_000_000_000 + n)
             for n, item in enumerate(odd)]
    applied = await users.apply_events_with_states(batch + batch[:1], history_len=3)
    assert applied.new == [True] * len(odd) + [False]
    state = applied.states["u ⌘ odd"]
    assert state.hist_version == len(odd) and state.history == [it or "empty" for it in odd][-3:]
    (read,) = await users.get_states(["u ⌘ odd"], history_len=10)
    assert read.history == [it or "empty" for it in odd] and read.purchased == {odd[0]}


async def test_apply_survives_a_script_cache_flush(users, redis_client):
    assert await users.apply_events([ev(1)]) == [True]
    await redis_client.script_flush()  # as after a Redis restart: NOSCRIPT, then load and re-run
    assert await users.apply_events([ev(1), ev(2, user="u2")]) == [False, True]
    await redis_client.script_flush()  # the read script too
    (u2,) = await users.get_states(["u2"], history_len=10)
    assert u2.history == ["i2"] and u2.hist_version == 1
