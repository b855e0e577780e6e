"""The features worker as a real process against the embedded broker and Redis."""
import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from shopstream.catalog.v1 import catalog_pb2
from shopstream.events.v1 import events_pb2

from services.contract import topics
from services.common.stores import keys
from services.common.stores.catalog import RedisCatalogStore
from services.common.stores.user_state import RedisUserStateStore
from services.contract.producer import EventProducer, ensure_topics
from services.stack.embedded import free_port
from services.stack.processes import metric_value, metrics_text
from support.helpers import stop_process
from support.kafka import read_topic_async
from support.toy_bundle import publish_toy_bundle

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def build_tiny_bundle(models_dir: Path, item_ids: list[str], dim: int = 4, max_len: int = 8) -> str:
    """A real bundle whose encoder sums item embeddings (random, seeded)."""
    return publish_toy_bundle(models_dir, item_ids, np.random.default_rng(0).normal(size=(len(item_ids), dim)),
                              max_len=max_len)


async def wait_for(predicate, timeout: float = 30.0, what: str = "condition", proc=None):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode} while waiting for {what}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def items():
    tag = uuid.uuid4().hex[:6]
    return [f"it-{tag}-{n}" for n in range(10)]


@dataclass
class Worker:
    proc: subprocess.Popen
    port: int  # metrics and probes
    model_version: str

    def poll(self):
        return self.proc.poll()

    def terminate(self):
        self.proc.terminate()

    def kill(self):
        self.proc.kill()

    def wait(self, timeout=None):
        return self.proc.wait(timeout=timeout)

    def probe(self, which: str) -> tuple[int, dict] | None:
        """(status, JSON body) of /healthz/<which>, or None while nothing listens."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz/{which}", timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())
        except OSError:
            return None

    def metric(self, name: str) -> float:
        text = metrics_text(self.port, timeout=5, names=[name])
        return (metric_value(text, name) or 0.0) if text else 0.0

    async def wait_ready(self, timeout: float = 45.0) -> None:
        async def ready():
            return (await asyncio.to_thread(self.probe, "ready") or (0,))[0] == 200
        await wait_for(ready, timeout=timeout, what="/healthz/ready 200", proc=self.proc)


@pytest.fixture
def start_worker(kafka_bootstrap, redis_url, tmp_path, items):
    """Starts ``python -m services.features`` (main, hence build) on one consumer group; each
    call is a fresh process of the same worker. All are stopped at the end."""
    ensure_topics(kafka_bootstrap, partitions=2)
    models = tmp_path / "models"
    version = build_tiny_bundle(models, items)
    app_id = f"features-test-{uuid.uuid4().hex[:8]}"
    started: list[tuple[Worker, object]] = []

    def start(**env_overrides: str) -> Worker:
        port = free_port()
        env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
            REDIS_URL=redis_url,
            SHOPSTREAM_FEATURES_APP_ID=app_id,
            SHOPSTREAM_FEATURES_MODELS_DIR=str(models),
            SHOPSTREAM_FEATURES_DATADIR=str(tmp_path / "faust"),
            SHOPSTREAM_FEATURES_METRICS_PORT=str(port),
            SHOPSTREAM_FEATURES_TOPIC_PARTITIONS="2",
            SHOPSTREAM_FEATURES_SESSION_TIMEOUT_S="4",
            SHOPSTREAM_FEATURES_HEARTBEAT_INTERVAL_S="1",
            SHOPSTREAM_FEATURES_REBALANCE_TIMEOUT_S="4",
            SHOPSTREAM_FEATURES_TRENDING_DECAY_INTERVAL_S="3600",
        )
        env.update(env_overrides)
        log = open(tmp_path / f"worker-{len(started)}.log", "w+")
        proc = subprocess.Popen([sys.executable, "-m", "services.features"], env=env, cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT)
        worker = Worker(proc, port, version)
        started.append((worker, log))
        return worker

    yield start
    for worker, log in started:
        stop_process(worker.proc, log)


@pytest.fixture
def worker(start_worker):
    return start_worker()


def event(user: str, n: int, item: str, type_code: int = 1) -> events_pb2.Event:
    return events_pb2.Event(event_id=f"{user}-{n}", user_id=user, item_id=item, type=type_code,
                            occurred_at=Timestamp(seconds=1_700_000_000 + n))


async def test_worker_applies_dead_letters_and_is_idempotent(kafka_bootstrap, redis_client, worker, items):
    tag = uuid.uuid4().hex[:8]
    alice, bob = f"alice-{tag}", f"bob-{tag}"
    valid = [
        (alice, event(alice, 1, items[1]).SerializeToString()),
        (alice, event(alice, 2, items[2], type_code=4).SerializeToString()),
        (alice, event(alice, 3, items[3]).SerializeToString()),
        (bob, (f'{{"event_id":"{bob}-1","user_id":"{bob}","item_id":"{items[1]}","type":"click",'
               f'"occurred_at":"2024-01-01T00:00:00Z"}}').encode()),
    ]
    malformed = {
        f"garbage-{tag}": (b"\xff\xfe\x00garbage", "bad_encoding"),
        f"nouser-{tag}": (f'{{"event_id":"x-{tag}","item_id":"i","type":"view",'
                          f'"occurred_at":"2024-01-01T00:00:00Z"}}'.encode(), "missing_user_id"),
        f"badtype-{tag}": (f'{{"event_id":"y-{tag}","user_id":"u","item_id":"i","type":"teleport",'
                           f'"occurred_at":"2024-01-01T00:00:00Z"}}'.encode(), "unknown_type"),
    }
    users = RedisUserStateStore(redis_client)

    with EventProducer(kafka_bootstrap) as producer:
        for user, raw in valid[:2]:
            producer.send_raw(topics.EVENTS, user.encode(), raw)
        for key, (raw, _) in malformed.items():
            producer.send_raw(topics.EVENTS, key.encode(), raw)
        for user, raw in valid[2:]:
            producer.send_raw(topics.EVENTS, user.encode(), raw)

        async def applied():
            a, b = await users.get_states([alice, bob], 50)
            # The embedding of the current history: one from an earlier batch may be there first.
            return len(a.history) == 3 and len(b.history) == 1 and \
                a.embedding_for(worker.model_version) is not None
        await wait_for(applied, timeout=45, what="events applied and embedded", proc=worker)

        a, b = await users.get_states([alice, bob], 50)
        assert a.history == [items[1], items[2], items[3]]
        assert a.purchased == {items[2]}
        assert b.history == [items[1]]
        assert a.embedding_for(worker.model_version) is not None  # encoded from the current history
        assert a.embedding.shape == (4,)

        async def snapshot():
            counts = {u: await redis_client.hgetall(keys.counters(u)) for u in (alice, bob)}
            for c in counts.values():
                c.pop(b"last_event_ms", None)
            trend = {i: await redis_client.zscore(keys.TRENDING, i) for i in items[:4]}
            return counts, trend

        before = await snapshot()
        assert before[1][items[1]] == pytest.approx(1.0 + 2.0)  # alice's view + bob's click
        assert before[1][items[2]] == pytest.approx(8.0)

        # Dead letters: the original bytes, the reason, where they came from.
        async def dead_lettered():
            recs = [r for r in await read_topic_async(kafka_bootstrap, topics.EVENTS_DEAD_LETTER)
                    if r.key and r.key.decode() in malformed]
            return recs if len(recs) == len(malformed) else None
        await wait_for(dead_lettered, timeout=20, what="dead letters", proc=worker)
        for rec in await dead_lettered():
            raw, reason = malformed[rec.key.decode()]
            headers = dict(rec.headers)
            assert rec.value == raw
            assert headers[topics.DLQ_REASON_HEADER] == reason.encode()
            topic, partition, offset = headers[topics.DLQ_SOURCE_HEADER].decode().rsplit("/", 2)
            assert topic == topics.EVENTS and int(partition) in (0, 1) and int(offset) >= 0

        # Redelivery: the same records again, then one new event per user as a marker
        # (each user's partition is ordered, so the marker lands after the duplicates).
        for user, raw in valid:
            producer.send_raw(topics.EVENTS, user.encode(), raw)
        producer.send_raw(topics.EVENTS, alice.encode(), event(alice, 4, items[4]).SerializeToString())
        producer.send_raw(topics.EVENTS, bob.encode(), event(bob, 2, items[6]).SerializeToString())

        async def markers_applied():
            a, b = await users.get_states([alice, bob], 50)
            return a.history[-1:] == [items[4]] and b.history[-1:] == [items[6]]
        await wait_for(markers_applied, timeout=20, what="marker events", proc=worker)

        a, b = await users.get_states([alice, bob], 50)
        assert a.history == [items[1], items[2], items[3], items[4]] and a.hist_version == 4
        assert b.history == [items[1], items[6]] and b.hist_version == 2
        counts, trend = await snapshot()
        assert counts[alice][b"events"] == b"4" and counts[alice][b"purchase"] == b"1"
        assert counts[alice][b"view"] == b"3"
        assert counts[bob][b"events"] == b"2" and counts[bob][b"click"] == b"1"
        assert trend == before[1]  # markers touched other items; the redelivered ones did not count

        # Catalog: valid upserts, invalid goes to the same DLQ.
        good = catalog_pb2.CatalogItem(item_id=items[5], title="t", category="c", price=3.0, in_stock=True)
        producer.send_raw(topics.CATALOG, items[5].encode(), good.SerializeToString())
        producer.send_raw(topics.CATALOG, f"badprice-{tag}".encode(), b'{"item_id":"z","price":-5}')
        catalog = RedisCatalogStore(redis_client)

        async def upserted():
            return items[5] in (await catalog.snapshot()).items
        await wait_for(upserted, timeout=20, what="catalog upsert", proc=worker)
        assert (await catalog.snapshot()).items[items[5]] == good

        async def catalog_dead_letter():
            return [r for r in await read_topic_async(kafka_bootstrap, topics.EVENTS_DEAD_LETTER)
                    if r.key == f"badprice-{tag}".encode()]
        await wait_for(catalog_dead_letter, timeout=20, what="catalog dead letter", proc=worker)
        (rec,) = await catalog_dead_letter()
        assert dict(rec.headers)[topics.DLQ_REASON_HEADER] == b"bad_price"
        assert dict(rec.headers)[topics.DLQ_SOURCE_HEADER].decode().startswith(topics.CATALOG + "/")

    worker.terminate()
    assert worker.wait(timeout=20) == 0  # SIGTERM stops cleanly


async def test_probes_say_ready_once_assigned_and_redis_answers(worker):
    await worker.wait_ready()
    status, body = await asyncio.to_thread(worker.probe, "ready")
    assert status == 200 and body["ready"] and body["partitions"] >= 1 and body["reasons"] == []
    assert await asyncio.to_thread(worker.probe, "live") == (200, {"live": True, "reasons": []})
    text = await asyncio.to_thread(metrics_text, worker.port, 5)
    assert "shopstream_features_events_processed_total" in text  # the metrics stay on the same port


async def test_without_redis_the_worker_is_live_but_not_ready(start_worker):
    worker = start_worker(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there

    async def only_redis_missing():
        answer = await asyncio.to_thread(worker.probe, "ready")
        return (answer is not None and answer[0] == 503 and answer[1].get("partitions", 0) >= 1
                and len(answer[1]["reasons"]) == 1 and answer[1]["reasons"][0].startswith("redis:"))
    await wait_for(only_redis_missing, timeout=45, what="ready 503 for Redis alone", proc=worker.proc)
    # Redis down is the stores' problem (the batch is retried, unacked), not a reason to restart.
    assert await asyncio.to_thread(worker.probe, "live") == (200, {"live": True, "reasons": []})
    worker.kill()  # a SIGTERM would wait for the unwritable batch


def _events(tag: str, users: int = 10, per_user: int = 5, items: list[str] = ()) -> dict[str, list[bytes]]:
    return {f"{tag}-{u}": [event(f"{tag}-{u}", n, items[n % len(items)]).SerializeToString()
                           for n in range(1, per_user + 1)]
            for u in range(users)}


async def test_a_batch_is_acked_only_after_its_write(start_worker, kafka_bootstrap, redis_client, items):
    """Writes held (CLIENT PAUSE WRITE) while a batch is in flight: SIGKILL then means the next
    worker consumes it again; SIGTERM means the worker writes it, commits and exits, so the next
    one does not see it again. Either way every event counts once."""
    tag = uuid.uuid4().hex[:8]
    store = RedisUserStateStore(redis_client)
    processed = "shopstream_features_events_processed_total"

    async def all_applied(batch):
        states = await store.get_states(list(batch), 50)
        return all(s.hist_version == len(batch[s.user_id]) for s in states)

    async def hold_writes_while(worker, batch, producer):
        """Produce ``batch`` with Redis writes paused; returns once the worker took a batch
        (it counts records before writing them), i.e. with an unwritten batch in flight."""
        # First the worker catches up (the topic holds other tests' events): one new event
        # on each of several keys, so on every partition, and all of them applied.
        settle = {f"settle-{uuid.uuid4().hex[:8]}-{n}": [b""] for n in range(16)}
        for user in settle:
            producer.send_raw(topics.EVENTS, user.encode(), event(user, 1, items[0]).SerializeToString())
        producer.flush()
        await wait_for(lambda: all_applied(settle), timeout=45, what="the worker idle", proc=worker.proc)
        await redis_client.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
        before = await asyncio.to_thread(worker.metric, processed)
        for user, raws in batch.items():
            for raw in raws:
                producer.send_raw(topics.EVENTS, user.encode(), raw)
        producer.flush()

        async def taken():
            return await asyncio.to_thread(worker.metric, processed) > before
        await wait_for(taken, timeout=30, what="a batch taken while writes are held", proc=worker.proc)

    killed, stopped = _events(f"kill-{tag}", items=items), _events(f"term-{tag}", items=items)
    with EventProducer(kafka_bootstrap) as producer:
        first = start_worker()
        await first.wait_ready()
        try:
            await hold_writes_while(first, killed, producer)
            first.kill()
            await asyncio.to_thread(first.wait, 20)
        finally:
            await redis_client.execute_command("CLIENT", "UNPAUSE")

        second = start_worker()
        await wait_for(lambda: all_applied(killed), timeout=45, what="the killed worker's batch", proc=second.proc)
        try:
            await hold_writes_while(second, stopped, producer)
            second.terminate()
        finally:
            await redis_client.execute_command("CLIENT", "UNPAUSE")
        assert await asyncio.to_thread(second.wait, 30) == 0  # wrote the held batch, committed, stopped

        third = start_worker()  # consumes what the second one had not taken
        await wait_for(lambda: all_applied(stopped), timeout=45, what="the rest of the batch", proc=third.proc)

    for batch in (killed, stopped):
        for user, raws in batch.items():
            counts = await redis_client.hgetall(keys.counters(user))
            assert counts[b"events"] == str(len(raws)).encode(), user  # once each: none lost, none doubled
    # The stopped worker committed what it wrote: nothing came again after its SIGTERM.
    assert await asyncio.to_thread(third.metric, "shopstream_features_events_duplicate_total") == 0
