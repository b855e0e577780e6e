"""EventBatchProcessor / CatalogBatchProcessor on the in-memory stores (no faust, no Redis)."""
import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError
from shopstream.events.v1 import events_pb2

from services.common.stores.memory import MemoryCatalogStore, MemoryTrendingStore, MemoryUserStateStore
from services.common.stores.user_state import UserState
from services.features.embeddings import EmbeddingRefresher
from services.features.metrics import FeaturesMetrics
from services.features.processing import CatalogBatchProcessor, EventBatchProcessor, SourceRecord
from services.features.settings import FeaturesSettings


class Users(MemoryUserStateStore):
    """The in-memory store, failing its first ``fail_times`` applies and keeping every embedding write."""

    def __init__(self, fail_times=0):
        super().__init__()
        self.fail_times, self.writes = fail_times, []

    async def apply_events_with_states(self, events, history_len):
        if self.fail_times:
            self.fail_times -= 1
            raise RedisConnectionError("down")
        return await super().apply_events_with_states(events, history_len)

    async def put_embeddings(self, writes):
        self.writes.extend(writes)
        await super().put_embeddings(writes)

    async def history(self, user):
        (state,) = await self.get_states([user], 50)
        return state.history


class FakeDLQ:
    def __init__(self):
        self.sent, self.flushed = [], 0

    async def send(self, record, reason):
        self.sent.append((record, reason))

    async def flush(self):
        self.flushed += 1


class FakeBundle:
    version, max_len = "v1", 3

    def encode(self, histories):
        return np.array([[len(h), 0.0] for h in histories], dtype=np.float32)


class Holder:
    def __init__(self, bundle):
        self.bundle = bundle


class ManualClock:
    """The refresher's clock, moved only by ``advance``; ``settled`` waits until the refresher waits on it."""

    def __init__(self):
        self.t = 0.0
        self._waiting = asyncio.Event()
        self._moved = asyncio.Event()

    def now(self):
        return self.t

    async def wait(self, event, timeout):
        deadline = self.t + timeout
        while not event.is_set() and self.t < deadline:
            self._moved.clear()
            self._waiting.set()
            moved, woken = asyncio.ensure_future(self._moved.wait()), asyncio.ensure_future(event.wait())
            try:
                await asyncio.wait({moved, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                moved.cancel()
                woken.cancel()

    def move(self, seconds):
        self._waiting.clear()
        self.t += seconds
        self._moved.set()

    async def advance(self, seconds):
        """Move time on; returns once the refresher has looked at the new time and waits again."""
        self.move(seconds)
        await self.settled()

    async def settled(self):
        await asyncio.wait_for(self._waiting.wait(), 5)


async def until(condition, timeout=5.0):
    """Await a condition that a thread (the encode executor) makes true; the timeout only fails the test."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def record(value: bytes, offset=0) -> SourceRecord:
    return SourceRecord("shopstream.events.v1", 0, offset, 1.0, b"k", value)


def raw_event(eid, user="u1", item="i1", type_code=1) -> bytes:
    ev = events_pb2.Event(event_id=eid, user_id=user, item_id=item, type=type_code)
    ev.occurred_at.seconds = 1_700_000_000
    return ev.SerializeToString()


def build(bundle=None, users=None):
    metrics = FeaturesMetrics(CollectorRegistry())
    users = users or Users()
    trending, dlq = MemoryTrendingStore(), FakeDLQ()
    refresher = EmbeddingRefresher(users, Holder(bundle), ThreadPoolExecutor(1), metrics)
    return EventBatchProcessor(users, trending, refresher, dlq, metrics), users, trending, dlq, metrics


async def test_batch_applies_valid_and_dead_letters_invalid():
    proc, users, trending, dlq, metrics = build(FakeBundle())
    applied = await proc.process([record(raw_event("e1")), record(b"\xff\xfe", 1),
                                  record(raw_event("e2", item="i2", type_code=4), 2)])
    await proc.drain()
    assert applied == 2
    assert await users.history("u1") == ["i1", "i2"]
    assert await trending.top(10) == [("i2", 8.0), ("i1", 1.0)]  # a purchase weighs 8, a view 1
    assert [(r.offset, reason) for r, reason in dlq.sent] == [(1, "bad_encoding")]
    assert dlq.sent[0][0].source == "shopstream.events.v1/0/1"
    assert [(w.user_id, w.model_version, w.hist_version) for w in users.writes] == [("u1", "v1", 2)]
    (state,) = await users.get_states(["u1"], 3)
    assert state.embedding_for("v1") is not None
    assert metrics.records_invalid.labels("shopstream.events.v1", "bad_encoding")._value.get() == 1


async def test_redelivery_counts_nothing_twice():
    proc, users, trending, dlq, metrics = build(FakeBundle())
    batch = [record(raw_event("e1")), record(raw_event("e2", item="i2"), 1)]
    await proc.process(batch)
    assert await proc.process(batch) == 0
    await proc.drain()
    assert await users.history("u1") == ["i1", "i2"]
    assert await trending.top(10) == [("i2", 1.0), ("i1", 1.0)]
    assert users.counters("u1")["events"] == 2
    assert len(users.writes) == 1  # nothing new, nothing re-encoded
    assert metrics.events_duplicate._value.get() == 2


async def test_without_model_embeddings_are_skipped():
    proc, users, *_ = build(bundle=None)
    assert await proc.process([record(raw_event("e1"))]) == 1
    await proc.drain()
    assert users.writes == []


async def test_redis_errors_retry_the_batch(monkeypatch):
    monkeypatch.setattr("asyncio.sleep", _no_sleep)  # tenacity sleeps through asyncio.sleep
    proc, users, trending, _, metrics = build(users=Users(fail_times=2))
    assert await proc.process([record(raw_event("e1"))]) == 1
    assert metrics.store_retries._value.get() == 2 and await trending.top(10) == [("i1", 1.0)]


async def _no_sleep(_):
    return None


async def test_catalog_batch_last_record_wins():
    dlq, cat = FakeDLQ(), MemoryCatalogStore()
    proc = CatalogBatchProcessor(cat, dlq, FeaturesMetrics(CollectorRegistry()))
    n = await proc.process([record(b'{"item_id":"a","price":1}'), record(b'{"item_id":"a","price":2}', 1),
                            record(b'{"item_id":"b","price":-1}', 2)])
    assert n == 1 and {k: i.price for k, i in (await cat.snapshot()).items.items()} == {"a": 2.0}
    assert [reason for _, reason in dlq.sent] == ["bad_price"]


def test_settings_from_env(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_FEATURES_BATCH_SIZE", "64")
    monkeypatch.setenv("SHOPSTREAM_MODELS_DIR", "/models")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k:9092")
    s = FeaturesSettings()
    assert s.batch_size == 64 and str(s.models_dir) == "/models" and s.kafka_bootstrap_servers == "k:9092"


def test_bad_setting_names_the_variable(monkeypatch):
    from services.common.settings import SettingsError, load

    monkeypatch.setenv("SHOPSTREAM_FEATURES_BATCH_SIZE", "0")
    with pytest.raises(SettingsError, match="SHOPSTREAM_FEATURES_BATCH_SIZE"):
        load(FeaturesSettings)


class GatedBundle(FakeBundle):
    """encode blocks until the test opens the gate, so batches pile up behind it."""

    def __init__(self):
        self.gate, self.started, self.calls = threading.Event(), threading.Event(), []

    def encode(self, histories):
        self.started.set()
        self.gate.wait(5)
        self.calls.append(len(histories))
        return super().encode(histories)


async def test_embedding_refresh_runs_in_background_and_coalesces_users():
    bundle = GatedBundle()
    proc, users, *_ = build(bundle)
    # The first batch's encode is held: process() must return without waiting for it.
    assert await proc.process([record(raw_event("e1", user="a"))]) == 1
    await until(bundle.started.is_set)
    assert users.writes == []
    # Two more batches for the same users queue up: one entry per user, the newest state.
    await proc.process([record(raw_event("e2", user="a", item="i2"), 1), record(raw_event("e3", user="b"), 2)])
    await proc.process([record(raw_event("e4", user="a", item="i3"), 3)])
    bundle.gate.set()
    await proc.drain()
    assert bundle.calls == [1, 2]  # the first batch alone, then users a and b together
    assert {w.user_id: w.hist_version for w in users.writes} == {"a": 3, "b": 1}


async def test_embedding_refresh_uses_the_model_window_of_history():
    proc, users, *_ = build(FakeBundle())  # max_len 3
    await proc.process([record(raw_event(f"e{n}", item=f"i{n}"), n) for n in range(5)])
    await proc.drain()
    (write,) = users.writes
    assert write.hist_version == 5 and float(write.vector[0]) == 3.0  # encoded from the last 3 items only


def _refresher(clock, users, calls, **pacing):
    refresher = EmbeddingRefresher(users, Holder(FakeBundle()), ThreadPoolExecutor(1),
                                   FeaturesMetrics(CollectorRegistry()), clock=clock, **pacing)
    original = refresher.refresh_states

    async def counting(states):
        calls.append(sorted(s.user_id for s in states))
        return await original(states)

    refresher.refresh_states = counting
    return refresher


async def test_embedding_refresh_is_paced_and_flush_skips_the_pause():
    clock, users, calls = ManualClock(), Users(), []
    refresher = _refresher(clock, users, calls, min_interval_s=30.0, idle_s=30.0)
    refresher.submit([UserState("a", ["i1"], hist_version=1)])
    await clock.settled()  # the first refresh is written and its pause began
    # Within the pause, later states coalesce instead of starting encodes of their own.
    refresher.submit([UserState("a", ["i1", "i2"], hist_version=2), UserState("b", ["i1"], hist_version=1)])
    refresher.submit([UserState("b", ["i1", "i3"], hist_version=2)])
    await clock.advance(29.0)
    assert calls == [["a"]]
    await asyncio.wait_for(refresher.flush(), 5)  # no waiting out the last second
    assert calls == [["a"], ["a", "b"]]
    assert {w.user_id: w.hist_version for w in users.writes} == {"a": 2, "b": 2}


async def test_embedding_refresh_pause_ends_when_apply_goes_idle():
    clock, users, calls = ManualClock(), Users(), []
    refresher = _refresher(clock, users, calls, min_interval_s=30.0, idle_s=0.2)
    refresher.apply_started()
    refresher.submit([UserState("a", ["i1"], hist_version=1)])
    await clock.settled()
    refresher.submit([UserState("a", ["i1", "i2"], hist_version=2)])
    await clock.advance(0.4)  # one long batch in progress: the pause goes on
    refresher.apply_done()
    for _ in range(3):  # short batches keep coming, each within idle_s of the last: the pause goes on
        await clock.advance(0.1)
        refresher.apply_started()
        refresher.apply_done()
    assert [w.hist_version for w in users.writes] == [1]
    await clock.advance(0.1)
    assert [w.hist_version for w in users.writes] == [1]
    # No batch for longer than idle_s (the pause looks again at most idle_s after its last
    # look): the backlog is gone, no need to wait 30 s.
    clock.move(0.2)
    await until(lambda: len(users.writes) == 2)
    assert calls == [["a"], ["a"]] and [w.hist_version for w in users.writes] == [1, 2]
