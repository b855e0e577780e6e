"""The attribution store's join and counting on a real Redis (valkey): the rules of
docs/experiments.md, and exactly once under redelivery and a crash between the two slots."""
import pytest
from shopstream.catalog.v1 import catalog_pb2

from services.common.stores.catalog import RedisCatalogStore
from services.common.stores.user_state import RedisUserStateStore
from services.features.attribution_store import (AttributionConfig, Applied, EventRecord, ImpressionRecord,
                                                 RedisAttributionStore, bucket_start, read_experiment,
                                                 read_unattributed, user_keys)

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000  # ms, on a minute boundary
MIN = 60_000


def imp(rid, user, variant, items, t=T0, experiment="exp"):
    return ImpressionRecord(rid, user, variant, experiment, t, tuple(items))


def ev(eid, user, item, type_code, t=T0 + 1000, rid="", position=-1, value=0):
    return EventRecord(eid, user, item, type_code, t, rid, position, value)


@pytest.fixture(params=["one call", "outbox"])
def store(request, redis_client):
    """Both ways of writing a batch: one atomic call per chunk of users (a single Redis), and
    the outbox's three steps (what a Redis Cluster needs), forced here on a single Redis."""
    return RedisAttributionStore(redis_client, AttributionConfig(window_ms=30 * MIN, bucket_ms=MIN),
                                 outbox=request.param == "outbox")


async def totals(redis, experiment="exp"):
    return {v: {**s.totals(), "users": s.users} for v, s in (await read_experiment(redis, experiment)).items()}


async def test_explicit_and_window_attribution_with_lists_and_positions(store, redis_client):
    await store.write([imp("r1", "u1", "A", ["i1", "i2", "i3"]), imp("r2", "u2", "B", ["i1", "i9"], t=T0 + MIN)])
    await store.write([
        ev("e1", "u1", "i2", 2, rid="r1", position=1),  # explicit, position given
        ev("e2", "u1", "i3", 2, rid="r1"),  # explicit, position from the list: 2
        ev("e3", "u1", "i3", 4, rid="r1", value=12_500_000),  # a purchase worth 12.5
        ev("e4", "u2", "i9", 2, t=T0 + MIN + 5000),  # no id: the list served 5 s before had it
        ev("e5", "u2", "i7", 2, t=T0 + MIN + 5000),  # no id, no list had it
        ev("e6", "u2", "i1", 3, t=T0 + 31 * MIN + 1),  # no id, the list is older than the window
    ])
    t = await totals(redis_client)
    assert t["A"]["impressions"] == 1 and t["A"]["clicks"] == 2 and t["A"]["clicked_lists"] == 1
    assert t["A"]["purchases"] == 1 and t["A"]["revenue_micros"] == 12_500_000
    assert t["A"]["revenue_sq"] == pytest.approx(12.5 ** 2)
    assert t["A"]["click_position_sum"] == 3 and t["A"]["click_position_count"] == 2
    assert t["A"]["pos:1"] == 1 and t["A"]["pos:2"] == 1 and t["A"]["users"] == 1
    assert t["B"]["impressions"] == 1 and t["B"]["clicks"] == 1 and t["B"]["click_position_sum"] == 1
    assert "add_to_carts" not in t["B"]
    un = await read_unattributed(redis_client)
    assert un == {"no_list_in_window:click": 1, "no_list_in_window:add_to_cart": 1}
    series = await read_experiment(redis_client, "exp")
    assert sorted(series["B"].buckets) == [bucket_start(T0 + MIN, MIN)]  # counted in the list's bucket


async def test_most_recent_list_wins(store, redis_client):
    await store.write([imp("old", "u", "A", ["x"], t=T0), imp("new", "u", "B", ["x"], t=T0 + 10_000)])
    await store.write([ev("e", "u", "x", 2, t=T0 + 20_000)])
    t = await totals(redis_client)
    assert t["B"]["clicks"] == 1 and "clicks" not in t["A"]


async def test_old_lists_go_beyond_the_cap_and_their_events_count_as_expired(redis_client, store):
    small = RedisAttributionStore(redis_client, AttributionConfig(window_ms=30 * MIN, bucket_ms=MIN, max_lists=5),
                                  outbox=store._outbox)
    for n in range(40):  # one list at a time, each newer than the last
        await small.write([imp(f"r{n}", "u", "A", [f"i{n}"], t=T0 + n)])
    lists, recent = user_keys("u")[:2]
    kept = {k.decode() for k in await redis_client.hkeys(lists)}
    assert 5 <= len(kept) <= 5 + 15 and await redis_client.zcard(recent) == len(kept)  # trimmed every 16 arrivals
    assert {f"r{n}" for n in range(35, 40)} <= kept and "r0" not in kept  # the newest stay
    await small.write([ev("e-old", "u", "i0", 2, t=T0 + 100, rid="r0"), ev("e-new", "u", "i39", 2, t=T0 + 100,
                                                                          rid="r39")])
    assert (await read_unattributed(redis_client))["expired_recommendation:click"] == 1
    assert (await totals(redis_client))["A"]["clicks"] == 1


async def test_redelivery_counts_once(store, redis_client):
    batch = [imp("r1", "u1", "A", ["i1"]), ev("e1", "u1", "i1", 2, rid="r1"), ev("e1", "u1", "i1", 2, rid="r1")]
    first = await store.write(batch)
    assert first.new == [True, True, False]
    again = await store.write(batch)
    assert again.new == [False, False, False] and again.increments == []
    t = await totals(redis_client)
    assert t["A"]["impressions"] == 1 and t["A"]["clicks"] == 1


async def test_unknown_recommendation_then_its_list_arrives(store, redis_client):
    await store.write([ev("e1", "u1", "i1", 2, rid="late"), ev("e2", "u1", "i1", 4, rid="never", value=1_000_000)])
    assert await read_unattributed(redis_client) == {
        "unknown_recommendation:click": 1, "unknown_recommendation:purchase": 1,
        "unknown_recommendation:revenue_micros": 1_000_000}
    applied = await store.write([imp("late", "u1", "A", ["i1"])])
    assert ("exp", "A", "clicks", 1) in applied.increments
    assert ("unknown_recommendation:click", -1) in applied.unattributed
    un = await read_unattributed(redis_client)
    assert un["unknown_recommendation:click"] == 0 and un["unknown_recommendation:purchase"] == 1
    t = await totals(redis_client)
    assert t["A"]["clicks"] == 1 and t["A"]["clicked_lists"] == 1


async def test_crash_between_the_user_slot_and_the_aggregates(store, redis_client):
    """Step 1 written, the worker dies before step 2: the redelivered records are duplicates,
    and the outbox entry is applied once; then a crash after step 2: applied entries skip."""
    batch = [imp("r1", "u1", "A", ["i1"]), ev("e1", "u1", "i1", 2, rid="r1")]
    new, entries = await store.join(batch)
    assert new == [True, True] and len(entries) == 1
    assert await totals(redis_client) == {}  # nothing applied yet
    again = await store.write(batch)  # the redelivery
    assert again.new == [False, False] and ("exp", "A", "clicks", 1) in again.increments
    # Now an entry applied but not removed from the outbox (a crash before step 3):
    new, entries = await store.join([ev("e2", "u1", "i1", 2, rid="r1")])
    await store._apply(entries, Applied(new))
    await store.write([ev("e2", "u1", "i1", 2, rid="r1")])
    t = await totals(redis_client)
    assert t["A"]["impressions"] == 1 and t["A"]["clicks"] == 2
    assert await redis_client.zcard(user_keys("u1")[4]) == 0  # outbox emptied


async def test_purchases_without_value_are_priced_from_the_catalog(store, redis_client):
    await RedisCatalogStore(redis_client).upsert([catalog_pb2.CatalogItem(item_id="i1", price=3.25)])
    assert await store.prices_micros(["i1", "nope"]) == {"i1": 3_250_000}


async def test_records_from_before_forget_user_are_never_applied_again(store, redis_client):
    """ForgetUser's tombstone holds for attribution as for the features worker's events: a
    redelivery of the forgotten user's old records counts nothing and leaves no state."""
    batch = [imp("r1", "u1", "A", ["i1"]), ev("e1", "u1", "i1", 2, rid="r1")]
    await store.write(batch)
    deleted = await RedisUserStateStore(redis_client).forget("u1", now_ms=T0 + 5_000)
    assert deleted >= 2
    again = await store.write(batch)  # redelivered after the forget
    assert again.new == [False, False] and again.increments == []
    assert not await redis_client.exists(*user_keys("u1")[:4])  # lists, recent, seen, pending
    later = await store.write([imp("r2", "u1", "A", ["i2"], t=T0 + 6_000)])  # after it: counts
    assert later.new == [True]
    assert (await totals(redis_client))["A"]["impressions"] == 2
