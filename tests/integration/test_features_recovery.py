"""Redis loses the worker's state anyway (FLUSHALL, a restart without persistence, a replica
without the latest writes): the worker notices through its recovery marks and replays the
retained Kafka log. A broker and a Redis of this test's own, so the log holds exactly the
events below and Redis may be flushed and restarted; the worker is ``python -m services.features``."""
import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter

import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from shopstream.catalog.v1 import catalog_pb2
from shopstream.events.v1 import events_pb2
from shopstream.ranker.v1 import ranker_pb2

from services.common.infra import connect_redis
from services.common.stores import keys
from services.common.stores.catalog import RedisCatalogStore
from services.common.stores.trending import EVENT_WEIGHTS, RedisTrendingStore
from services.common.stores.user_state import EVENT_TYPE_NAMES, PURCHASE, RedisUserStateStore
from services.contract import topics
from services.contract.producer import EventProducer, ensure_topics
from services.stack.embedded import EmbeddedRedis, free_port
from services.stack.processes import metric_value, metrics_text
from support.helpers import stop_process
from support.ranker_harness import Ranker
from support.toy_bundle import publish_toy_bundle

pytestmark = pytest.mark.integration

REBUILDS = "shopstream_features_rebuilds_total"
TYPES = (1, 2, 3, 4, 1, 2, 1)  # view, click, add to cart, purchase, ...


class Oracle:
    """What Redis must hold after every event applied exactly once."""

    def __init__(self) -> None:
        self.history: dict[str, list[str]] = {}
        self.types: dict[str, Counter] = {}
        self.purchased: dict[str, set[str]] = {}
        self.trending: Counter = Counter()
        self.trending_by_user: dict[str, Counter] = {}

    def add(self, user: str, item: str, type_code: int) -> None:
        self.history.setdefault(user, []).append(item)
        purchased = self.purchased.setdefault(user, set())
        if type_code == PURCHASE:
            purchased.add(item)
        self.types.setdefault(user, Counter())[type_code] += 1
        self.trending[item] += EVENT_WEIGHTS[type_code]
        self.trending_by_user.setdefault(user, Counter())[item] += EVENT_WEIGHTS[type_code]


def make_events(tag: str, round_: int, items: list[str], oracle: Oracle, users: int = 6) -> list[tuple[str, bytes]]:
    out = []
    for u in range(users):
        user = f"{tag}-u{u}"
        for n in range(len(TYPES)):
            item, type_code = items[(u + n + round_) % len(items)], TYPES[(n + round_) % len(TYPES)]
            ev = events_pb2.Event(event_id=f"{user}-{round_}-{n}", user_id=user, item_id=item, type=type_code,
                                  occurred_at=Timestamp(seconds=1_700_000_000 + 100 * round_ + n))
            oracle.add(user, item, type_code)
            out.append((user, ev.SerializeToString()))
    return out


async def wait_for(predicate, timeout: float, what: str, proc=None):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = None
    while loop.time() < deadline:
        last = await predicate()
        if last is True:
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode} while waiting for {what}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture
def own_redis(tmp_path):
    server = EmbeddedRedis(data_dir=tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def restart_without_persistence(server: EmbeddedRedis) -> None:
    """SIGKILL, its files gone, the same port and password again: an empty Redis, as a
    restarted server without persistence (or a new replica) would be."""
    server.kill()
    for entry in server.data_dir.iterdir():
        if entry.name != ".embedded-redis.lock":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    server.start()


class Workers:
    """Starts ``python -m services.features`` processes of one consumer group; stops them all at the end."""

    def __init__(self, kafka: str, redis_url: str, tmp_path) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.items = [f"it-{self.tag}-{n}" for n in range(8)]
        self.models = tmp_path / "models"
        self.model_version = publish_toy_bundle(self.models, self.items,
                                                np.random.default_rng(0).normal(size=(len(self.items), 4)), max_len=8)
        self._env = dict(
            os.environ, KAFKA_BOOTSTRAP_SERVERS=kafka, REDIS_URL=redis_url,
            SHOPSTREAM_FEATURES_APP_ID=f"recovery-{self.tag}", SHOPSTREAM_FEATURES_MODELS_DIR=str(self.models),
            SHOPSTREAM_FEATURES_DATADIR=str(tmp_path / "faust"), SHOPSTREAM_FEATURES_TOPIC_PARTITIONS="2",
            SHOPSTREAM_FEATURES_SESSION_TIMEOUT_S="4", SHOPSTREAM_FEATURES_HEARTBEAT_INTERVAL_S="1",
            SHOPSTREAM_FEATURES_REBALANCE_TIMEOUT_S="4",
            SHOPSTREAM_FEATURES_TRENDING_DECAY_INTERVAL_S="3600",  # no decay: trending compares exactly
            SHOPSTREAM_FEATURES_RECOVERY_CHECK_INTERVAL_S="0.2")
        self._tmp = tmp_path
        self.started: list[tuple[subprocess.Popen, object]] = []

    def start(self) -> tuple[subprocess.Popen, int]:
        port = free_port()
        log = open(self._tmp / f"worker-{len(self.started)}.log", "w+")
        proc = subprocess.Popen([sys.executable, "-m", "services.features"],
                                env={**self._env, "SHOPSTREAM_FEATURES_METRICS_PORT": str(port)}, cwd=self._tmp,
                                stdout=log, stderr=subprocess.STDOUT)
        self.started.append((proc, log))
        return proc, port

    def stop_all(self) -> None:
        for proc, log in self.started:
            stop_process(proc, log)


@pytest.fixture
def workers(restartable_kafka, own_redis, tmp_path):
    ensure_topics(restartable_kafka.bootstrap_servers, partitions=2)
    started = Workers(restartable_kafka.bootstrap_servers, own_redis.url, tmp_path)
    yield started
    started.stop_all()


def rebuilds(port: int) -> float:
    text = metrics_text(port, timeout=5, names=[REBUILDS])
    return (metric_value(text, REBUILDS) or 0.0) if text else 0.0


async def test_lost_redis_state_is_rebuilt_from_the_log(workers, restartable_kafka, own_redis):
    items, tag = workers.items, workers.tag
    proc, port = workers.start()
    oracle = Oracle()
    catalog_items = [catalog_pb2.CatalogItem(item_id=item, title=f"t{n}", category=f"c{n % 3}", price=1.0 + n,
                                             in_stock=n != 2) for n, item in enumerate(items)]
    redis = connect_redis(own_redis.url)
    users, catalog = RedisUserStateStore(redis), RedisCatalogStore(redis)
    trending = RedisTrendingStore(redis)

    async def matches_oracle():
        """True when every user's history, purchases and counters, the catalog and trending are
        the oracle's; else what differs (for the failure message). Redis errors while it restarts
        count as not yet."""
        try:
            names = sorted(oracle.history)
            states = await users.get_states(names, 1000)
            for user, state in zip(names, states):
                want = oracle.history[user]
                counts = {k.decode(): int(v) for k, v in (await redis.hgetall(keys.counters(user))).items()}
                counts.pop("last_event_ms", None)
                want_counts = {EVENT_TYPE_NAMES[t]: n for t, n in oracle.types[user].items()}
                want_counts.update(events=len(want), hist_version=len(want))
                if state.history != want or state.purchased != oracle.purchased[user] or counts != want_counts:
                    return f"{user}: {state.history} {state.purchased} {counts}"
            snapshot = await catalog.snapshot()
            if {i: snapshot.items.get(i) for i in items} != {c.item_id: c for c in catalog_items}:
                return f"catalog: {sorted(snapshot.items)}"
            top = dict(await trending.top(100))
            if top.keys() != oracle.trending.keys() or any(abs(top[i] - w) > 1e-6 for i, w in oracle.trending.items()):
                return f"trending: {top}"
            return True
        except Exception as exc:  # noqa: BLE001 - Redis restarting
            return repr(exc)

    def publish(producer, events):
        for user, raw in events:
            producer.send_raw(topics.EVENTS, user.encode(), raw, wait=False)
        producer.flush()

    try:
        with EventProducer(restartable_kafka.bootstrap_servers) as producer:
            producer.send_catalog(catalog_items)
            publish(producer, make_events(tag, 0, items, oracle))
            await wait_for(matches_oracle, 45, "the events applied", proc)
            assert await asyncio.to_thread(rebuilds, port) == 0  # a new group builds; nothing was lost

            # 1. FLUSHALL: marks gone with the data; the periodic check notices, the log is replayed.
            await redis.flushall()
            await wait_for(matches_oracle, 30, "the state rebuilt after FLUSHALL", proc)
            assert await asyncio.to_thread(rebuilds, port) >= 1

            # Live again: new events apply on top of the rebuilt state, each once.
            publish(producer, make_events(tag, 1, items, oracle))
            await wait_for(matches_oracle, 30, "new events after the rebuild", proc)

            # 2. Redis restarted without persistence: empty, scripts gone, connections dropped.
            before = await asyncio.to_thread(rebuilds, port)
            await asyncio.to_thread(restart_without_persistence, own_redis)
            await wait_for(matches_oracle, 30, "the state rebuilt after a restart without persistence", proc)
            assert await asyncio.to_thread(rebuilds, port) > before

            # 3. A replica promoted without the latest writes: it lacks one user's events (their
            # keys and their trending weight) and holds marks older than the worker wrote (0).
            lost = f"{tag}-u0"
            before = await asyncio.to_thread(rebuilds, port)
            pipe = redis.pipeline(transaction=False)
            for key in (keys.history(lost), keys.purchased(lost), keys.counters(lost), keys.dedup(lost)):
                pipe.delete(key)
            for item, weight in oracle.trending_by_user[lost].items():
                pipe.zincrby(keys.TRENDING, -weight, item)
            pipe.hset(keys.RECOVERY_MARKS, mapping={f"{topics.EVENTS}:{p}": 0 for p in (0, 1)})
            await pipe.execute()
            await wait_for(matches_oracle, 30, "the state replayed after the marks rolled back", proc)
            assert await asyncio.to_thread(rebuilds, port) > before

        # 4. Redis emptied while no worker runs: the next one finds the marks gone but offsets
        # committed when its partitions are assigned, and rebuilds before it writes anything.
        proc.terminate()
        assert await asyncio.to_thread(proc.wait, 20) == 0
        await asyncio.to_thread(restart_without_persistence, own_redis)
        proc, port = workers.start()
        await wait_for(matches_oracle, 45, "the state rebuilt by a new worker", proc)
        assert await asyncio.to_thread(rebuilds, port) >= 1

        # Personalized again: the worker encoded the rebuilt history with the loaded model, and a
        # ranker (as `shopstream ranker` starts it) ranks the user from it, not as a new user.
        model_version = workers.model_version

        async def personalized():
            (state,) = await users.get_states([lost], 8)
            return state.embedding_for(model_version) is not None or f"embedding {state.embedding_model}"
        await wait_for(personalized, 30, "an embedding of the rebuilt history", proc)
        async with Ranker(workers.models, redis, own_redis.url) as ranker:
            await ranker.load_model()
            response = await ranker.stub.Rank(ranker_pb2.RankRequest(user_id=lost, k=3), timeout=5)
        assert response.user_known and response.embedding_source == "redis"
        assert response.model_version == model_version and len(response.items) == 3
    finally:
        await redis.aclose()


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_recovery_marks_conformance(backend, redis_client):
    """The mark store's rules on both backends: set creates, advance only raises an existing
    mark that is at least the expected value, and never recreates a missing one."""
    from services.common.stores.recovery_marks import MemoryRecoveryMarks, RedisRecoveryMarks

    marks = RedisRecoveryMarks(redis_client) if backend == "redis" else MemoryRecoveryMarks()
    assert await marks.read(["a", "b"]) == {"a": None, "b": None}
    assert await marks.advance({"a": (0, 5)}) == {"a": None}
    assert await marks.read(["a"]) == {"a": None}  # not created
    await marks.set({"a": 3, "b": 10})
    assert await marks.advance({"a": (3, 7), "b": (10, 4)}) == {"a": 7, "b": 10}  # never lowered
    assert await marks.advance({"a": (9, 12)}) == {"a": 7}  # rolled back below what was expected: left alone
    assert await marks.read(["a", "b"]) == {"a": 7, "b": 10}
    await marks.set({"a": 1})
    assert await marks.read(["a"]) == {"a": 1}
