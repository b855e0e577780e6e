"""Conformance suite for the state stores: every implementation (Redis, Redis Cluster, in-memory) runs it."""
import numpy as np
import pytest
from shopstream.catalog.v1 import catalog_pb2

from services.common.stores import keys
from services.common.stores.catalog import RedisCatalogStore
from services.common.stores.memory import MemoryCatalogStore, MemoryTrendingStore, MemoryUserStateStore
from services.common.stores.trending import RedisTrendingStore
from services.common.stores.user_state import EmbeddingWrite, EventWrite, RedisUserStateStore
from services.features.attribution_store import EventRecord, ImpressionRecord, RedisAttributionStore, read_experiment
from services.stack.redis_cluster import EmbeddedRedisCluster

pytestmark = pytest.mark.integration

# "redis-cluster": three valkey masters in cluster mode, through the redis+cluster:// client.
BACKENDS = ["memory", "redis", "redis-cluster"]
REDIS_BACKENDS = {"redis": "redis_client", "redis-cluster": "redis_cluster_client"}
HISTORY_CAP, DEDUP_CAP = 5, 100


class Clock:
    """Injected into the memory stores; the Redis ones read the server's or host's time."""

    def __init__(self):
        self.now = 1_000.0

    def __call__(self):
        return self.now


@pytest.fixture(scope="session")
def redis_cluster_url():
    with EmbeddedRedisCluster(masters=3) as cluster:
        yield cluster.url


@pytest.fixture
async def redis_cluster_client(redis_cluster_url):
    """A fresh asyncio cluster client on flushed masters."""
    from services.common.infra import connect_redis

    client = connect_redis(redis_cluster_url)
    await client.flushdb()  # every master
    yield client
    await client.aclose()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The backend's name and, for Redis, a client on a flushed database (memory needs none)."""
    fixture = REDIS_BACKENDS.get(request.param)
    return request.param, request.getfixturevalue(fixture) if fixture else None


@pytest.fixture
def users(backend):
    name, client = backend
    if name != "memory":
        return RedisUserStateStore(client, history_cap=HISTORY_CAP, dedup_cap=DEDUP_CAP)
    return MemoryUserStateStore(history_cap=HISTORY_CAP, dedup_cap=DEDUP_CAP)


@pytest.fixture
def trending(backend):
    name, client = backend
    return RedisTrendingStore(client) if name != "memory" else MemoryTrendingStore(clock=Clock())


@pytest.fixture
def catalog(backend):
    name, client = backend
    return RedisCatalogStore(client) if name != "memory" else MemoryCatalogStore()


async def counters(backend, users, user_id: str) -> dict[str, int]:
    """The user's counters hash, which no Protocol method returns."""
    name, client = backend
    if name != "memory":
        return {k.decode(): int(v) for k, v in (await client.hgetall(keys.counters(user_id))).items()}
    return users.counters(user_id)


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


async def test_counters_count_each_event_once(users, backend):
    await users.apply_events([ev(1), ev(2, type_code=4)])
    await users.apply_events([ev(1), ev(2, type_code=4)])
    assert await counters(backend, users, "u1") == {
        "events": 2, "view": 1, "purchase": 1, "hist_version": 2, "last_event_ms": 1_700_000_000_002}
    await users.apply_events([ev(0, type_code=2)])  # an older event does not move last_event_ms back
    assert (await counters(backend, users, "u1"))["last_event_ms"] == 1_700_000_000_002
    await users.apply_events([ev(3, type_code=7)])  # an unknown type counts under its code
    counts = await counters(backend, users, "u1")
    assert counts["last_event_ms"] == 1_700_000_000_003
    assert counts["click"] == 1 and counts["7"] == 1 and counts["events"] == counts["hist_version"] == 4


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


async def test_trending_record_and_decay(trending):
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


@pytest.fixture(params=list(REDIS_BACKENDS))
def any_redis(request):
    """A client of each Redis backend (single node, cluster) on flushed data."""
    return request.getfixturevalue(REDIS_BACKENDS[request.param])


async def test_apply_survives_a_script_cache_flush(any_redis):
    redis_client = any_redis
    users = RedisUserStateStore(redis_client, history_cap=HISTORY_CAP, dedup_cap=DEDUP_CAP)
    assert await users.apply_events([ev(1)]) == [True]
    await redis_client.script_flush()  # as after a Redis restart: NOSCRIPT, then load and re-run
    assert await users.apply_events([ev(1), ev(2, user="u2")]) == [False, True]
    await redis_client.script_flush()  # the read script too
    (u2,) = await users.get_states(["u2"], history_len=10)
    assert u2.history == ["i2"] and u2.hist_version == 1


async def test_dedup_is_per_user(users):
    # The same event id from two users is two events: the window is each user's own.
    same_id = [EventWrite("e1", "u1", "a", 1, 1), EventWrite("e1", "u2", "b", 1, 2)]
    assert await users.apply_events(same_id) == [True, True]
    u1, u2 = await users.get_states(["u1", "u2"], history_len=10)
    assert u1.history == ["a"] and u2.history == ["b"]


async def test_dedup_window_forgets_the_oldest_ids_beyond_its_cap(users):
    # Ids sort in apply order (zero-padded), so a window's tie on apply time orders them the same.
    first = [EventWrite(f"e{n:04}", "u1", f"i{n}", 1, n) for n in range(DEDUP_CAP)]
    assert all(await users.apply_events(first))
    assert await users.apply_events([EventWrite(f"e{DEDUP_CAP:04}", "u1", "new", 1, 0)]) == [True]
    # e0000 fell out of the window (so applies again, evicting e0001), e0001 was still in it;
    # another user's window is its own.
    assert await users.apply_events([first[1], first[0], EventWrite("e0001", "u2", "x", 1, 0)]) == [False, True, True]
    (state,) = await users.get_states(["u1"], history_len=10)
    assert state.hist_version == DEDUP_CAP + 2


async def test_history_len_zero_returns_no_history(users):
    await users.apply_events([ev(1), ev(2, type_code=4)])
    applied = await users.apply_events_with_states([ev(3)], history_len=0)
    assert applied.new == [True] and applied.states["u1"].history == [] and applied.states["u1"].hist_version == 3
    (state,) = await users.get_states(["u1"], history_len=0)
    assert state.history == [] and state.purchased == {"i2"} and state.hist_version == 3


async def test_states_returned_by_apply_match_a_read(users):
    applied = await users.apply_events_with_states([ev(n) for n in range(1, 8)] + [ev(1, user="u2")], history_len=3)
    assert applied.states["u1"].history == ["i5", "i6", "i7"] and applied.states["u1"].hist_version == 7
    # A batch of only redeliveries still reports the user's state.
    again = await users.apply_events_with_states([ev(7)], history_len=10)
    assert again.new == [False] and again.states["u1"].history == ["i3", "i4", "i5", "i6", "i7"]
    assert again.states["u1"].hist_version == 7
    u1, u2, u1_again = await users.get_states(["u1", "u2", "u1"], history_len=10)
    assert u1 == u1_again and u1.history == again.states["u1"].history and u2.history == ["i1"]


async def test_get_states_without_embedding(users):
    await users.apply_events([ev(1)])
    await users.put_embeddings([EmbeddingWrite("u1", "m1", 1, np.ones(3))])  # float64 in, float32 stored
    (state,) = await users.get_states(["u1"], 10, with_embedding=False)
    assert state.embedding is None and state.embedding_model == "" and state.embedding_hist_version == -1
    (state,) = await users.get_states(["u1"], 10)
    assert state.embedding.dtype == np.float32 and state.embedding_for("m1").tolist() == [1.0, 1.0, 1.0]


async def test_trending_top_orders_ties_and_limits(trending):
    await trending.record([("a", 1), ("c", 1), ("b", 2), ("d", 9)])  # an unknown type weighs 1
    assert await trending.top(10) == [("b", 2.0), ("d", 1.0), ("c", 1.0), ("a", 1.0)]
    assert await trending.top(2) == [("b", 2.0), ("d", 1.0)]
    assert await trending.top(0) == []


async def test_trending_decay_drops_tiny_scores(trending):
    await trending.record([("a", 1)])
    assert await trending.decay(interval_s=60, half_life_s=5)  # 2^-12 of 1 is below 0.001
    assert await trending.top(5) == []


async def test_catalog_empty_upsert_keeps_the_version(catalog):
    await catalog.upsert([])
    assert await catalog.version() == 0
    item = catalog_pb2.CatalogItem(item_id="i1", category="c1", in_stock=True)
    await catalog.upsert([item])
    item.category = "changed after upsert"
    snap = await catalog.snapshot()
    assert snap.category("i1") == "c1"


async def test_memory_decay_lock_lasts_nine_tenths_of_the_interval():
    clock = Clock()
    trending = MemoryTrendingStore(clock=clock)
    await trending.record([("a", 3)])  # add to cart: 4
    assert await trending.decay(interval_s=10, half_life_s=10)
    clock.now += 8.9
    assert not await trending.decay(interval_s=10, half_life_s=10)
    clock.now += 0.1
    assert await trending.decay(interval_s=10, half_life_s=10)
    assert await trending.top(1) == [("a", pytest.approx(1.0))]


async def test_attribution_counts_each_record_once_on_either_redis(any_redis):
    """The attribution store's default on each backend: one atomic call per chunk of users on a
    single Redis, the outbox's three steps on a cluster (a call may touch one slot there)."""
    store = RedisAttributionStore(any_redis)
    t = 1_800_000_000_000
    batch = [ImpressionRecord("r1", "u1", "A", "exp", t, ("i1", "i2")),
             ImpressionRecord("r2", "u2", "A", "exp", t, ("i3",)),
             EventRecord("e1", "u1", "i2", 2, t + 1000, "r1", 1),
             EventRecord("e2", "u2", "i3", 2, t + 1000)]  # no id: the window finds r2
    first = await store.write(batch)
    again = await store.write(batch)  # redelivered
    assert first.new == [True] * 4 and again.new == [False] * 4 and not again.increments
    assert sum(n for _, _, name, n in first.increments if name == "clicks") == 2
    series = (await read_experiment(any_redis, "exp"))["A"]
    totals = series.totals()
    assert (totals["impressions"], totals["clicks"], totals["clicked_lists"], series.users) == (2, 2, 2, 2)
