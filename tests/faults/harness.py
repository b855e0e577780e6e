"""The fault-injection rig: real servers of a scenario's own, a publisher that knows what the
broker acknowledged, and an oracle that compares Redis with it.

Each scenario gets its own embedded broker and Redis (so it may kill and restart them) and
the features worker as a process through ``services.stack`` (as ``shopstream up`` runs it).
The publisher sends events with unique ids and unique items from a thread while the fault
happens; an event is *acknowledged* when its kafka-python future succeeded (``acks=all``).
The oracle then reads each user's history, purchases, counters and dedup set from Redis and
counts, over the acknowledged events: lost (acknowledged, never applied) and double-applied
(applied more than once), plus any mismatch in order, purchases or counters.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis
from kafka import KafkaProducer
from google.protobuf.timestamp_pb2 import Timestamp
from shopstream.events.v1 import events_pb2

from support.helpers import wait_for

from services.common.stores import keys
from services.common.stores.user_state import EVENT_TYPE_NAMES, PURCHASE
from services.contract import topics
from services.contract.producer import ensure_topics
from services.stack.embedded import EmbeddedKafka, EmbeddedRedis
from services.stack.local import ServiceStack
from services.stack.processes import metric_value, metrics_text

logger = logging.getLogger(__name__)

PARTITIONS = 2
CATALOG = [f"cat-{n}" for n in range(40)]  # the items of the scenarios' toy model bundle
# A killed worker's partitions move on after its session times out: short here, as in the
# worker's integration tests. No trending decay mid-test: states compare exactly.
WORKER_ENV = {
    "SHOPSTREAM_FEATURES_SESSION_TIMEOUT_S": "4",
    "SHOPSTREAM_FEATURES_HEARTBEAT_INTERVAL_S": "1",
    "SHOPSTREAM_FEATURES_REBALANCE_TIMEOUT_S": "4",
    "SHOPSTREAM_FEATURES_TRENDING_DECAY_INTERVAL_S": "3600",
    "SHOPSTREAM_FEATURES_BATCH_SIZE": "50",  # many batches in flight over a short stream
    "SHOPSTREAM_RANKER_EXECUTOR_THREADS": "1",
    "SHOPSTREAM_FEATURES_LOG_LEVEL": "WARNING",
}


def wait_until(check, timeout: float, what: str, interval: float = 0.1):
    """``support.helpers.wait_for`` with the scenario's description first."""
    return wait_for(check, timeout, interval, what=what)


@dataclass(frozen=True)
class Sent:
    event_id: str
    user_id: str
    item_id: str
    type_code: int


@dataclass
class Publisher:
    """Sends events with unique ids and items round-robin over ``users``; remembers each future."""

    bootstrap: str
    users: list[str]
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    sent: list[tuple[Sent, object]] = field(default_factory=list)
    extra_acked: list[Sent] = field(default_factory=list)  # sent again: redeliveries of earlier events
    _n: int = 0

    def __post_init__(self) -> None:
        self._producer = self._new_producer()

    def _new_producer(self) -> KafkaProducer:
        # One request in flight per connection: a retry cannot reorder a user's events.
        return KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", retries=5, linger_ms=5,
                             max_in_flight_requests_per_connection=1, request_timeout_ms=5000,
                             max_block_ms=5000, delivery_timeout_ms=15000)

    def reconnect(self) -> None:
        """A fresh kafka-python producer (after a broker restart lost its producer state)."""
        with contextlib.suppress(Exception):
            self._producer.close(timeout=1)
        self._producer = self._new_producer()

    def event(self) -> Sent:
        user = self.users[self._n % len(self.users)]
        type_code = (1, 2, 3, 4)[(self._n // len(self.users)) % 4]
        sent = Sent(f"{self.tag}-e{self._n}", user, f"{self.tag}-i{self._n}", type_code)
        self._n += 1
        return sent

    def send(self, ev: Sent) -> None:
        try:
            future = self._producer.send(topics.EVENTS, key=ev.user_id.encode(), value=encode(ev))
        except Exception as exc:  # not even queued (metadata timeout while the broker is down)
            future = exc
        self.sent.append((ev, future))

    def send_raw(self, key: bytes | None, value: bytes | None):
        return self._producer.send(topics.EVENTS, key=key, value=value)

    def publish(self, n: int, per_second: float | None = None) -> None:
        """``n`` new events, paced at ``per_second`` when given."""
        start = time.monotonic()
        for i in range(n):
            self.send(self.event())
            if per_second:
                ahead = start + (i + 1) / per_second - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            self._producer.flush(timeout=20)

    def outcome(self) -> tuple[list[Sent], list[Sent]]:
        """(acknowledged, not acknowledged), in send order; waits for every future."""
        self.flush()
        acked, failed = [], []
        for ev, future in self.sent:
            ok = False
            if not isinstance(future, Exception):
                with contextlib.suppress(Exception):
                    future.get(timeout=20)
                    ok = True
            (acked if ok else failed).append(ev)
        return acked, failed

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._producer.close(timeout=5)


_EPOCH = int(time.time()) - 3600


def encode(ev: Sent) -> bytes:
    """The event's bytes: the same for every send of it (a redelivery is the same record)."""
    return events_pb2.Event(event_id=ev.event_id, user_id=ev.user_id, item_id=ev.item_id, type=ev.type_code,
                            occurred_at=Timestamp(seconds=_EPOCH + _send_order(ev))).SerializeToString()


class PublishingThread:
    """``publisher.publish(n, per_second)`` in a thread, so a fault can happen mid-stream."""

    def __init__(self, publisher: Publisher, n: int, per_second: float) -> None:
        self._thread = threading.Thread(target=publisher.publish, args=(n, per_second), daemon=True)
        self._thread.start()

    def join(self, timeout: float = 120.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the publisher did not finish"


@dataclass
class Report:
    acked: int
    applied: int
    lost: list[str]
    doubled: list[str]
    mismatches: list[str]

    def __str__(self) -> str:
        return (f"acknowledged {self.acked}, applied {self.applied}, lost {len(self.lost)}, "
                f"double-applied {len(self.doubled)}, mismatches {self.mismatches[:5]}")


def user_state(client: redis.Redis, user: str) -> dict:
    pipe = client.pipeline(transaction=False)
    pipe.lrange(keys.history(user), 0, -1)
    pipe.smembers(keys.purchased(user))
    pipe.hgetall(keys.counters(user))
    pipe.zrange(keys.dedup(user), 0, -1)
    history, purchased, counters, dedup = pipe.execute()
    return {"history": [h.decode() for h in reversed(history)], "purchased": {p.decode() for p in purchased},
            "counters": {k.decode(): int(v) for k, v in counters.items()}, "dedup": {d.decode() for d in dedup}}


def compare(client: redis.Redis, acked: list[Sent], unacked: list[Sent] = ()) -> Report:
    """Redis against the acknowledged events, per user: each applied once (the dedup set has its
    id, the history its item once), in order, purchases and per-type counters as applied.
    Events that were sent but not acknowledged may be applied or not; they are neither lost
    nor doubles, but when applied they count in the counters like the others."""
    by_user: dict[str, list[Sent]] = {}
    for ev in dict.fromkeys([*acked, *unacked]):  # an event sent twice is one event
        by_user.setdefault(ev.user_id, []).append(ev)
    acked_ids = {ev.event_id for ev in acked}
    lost, doubled, mismatches, applied = [], [], [], 0
    for user, events in by_user.items():
        state = user_state(client, user)
        items = Counter(state["history"])
        doubled += [item for item, n in items.items() if n > 1]
        lost += [ev.event_id for ev in events if ev.event_id in acked_ids and ev.event_id not in state["dedup"]]
        done = [ev for ev in sorted(events, key=_send_order) if ev.event_id in state["dedup"]]
        applied += len(done)
        if state["history"] != [ev.item_id for ev in done]:
            mismatches.append(f"{user}: history")
        if state["purchased"] != {ev.item_id for ev in done if ev.type_code == PURCHASE}:
            mismatches.append(f"{user}: purchases")
        per_type = Counter(EVENT_TYPE_NAMES[ev.type_code] for ev in done)
        counters = {k: v for k, v in state["counters"].items() if k in EVENT_TYPE_NAMES.values()}
        if counters != dict(per_type) or state["counters"].get("events", 0) != len(done):
            mismatches.append(f"{user}: counters {state['counters']} for {len(done)} applied")
            if state["counters"].get("events", 0) > len(done):
                doubled += [f"{user}: {state['counters']['events'] - len(done)} extra"]
    return Report(len({ev.event_id for ev in acked}), applied, lost, doubled, mismatches)


def _send_order(ev: Sent) -> int:
    return int(ev.event_id.rsplit("-e", 1)[1])


def all_applied(client: redis.Redis, events: list[Sent]) -> bool:
    by_user: dict[str, set[str]] = {}
    for ev in events:
        by_user.setdefault(ev.user_id, set()).add(ev.event_id)
    return all(ids <= user_state(client, user)["dedup"] for user, ids in by_user.items())


class Rig:
    """A broker, a Redis and a features worker of the scenario's own."""

    def __init__(self, tmp: Path, models_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.kafka = EmbeddedKafka().start()
        self.redis = EmbeddedRedis(data_dir=tmp / "redis").start()
        ensure_topics(self.kafka.bootstrap_servers, partitions=PARTITIONS)
        env = {**WORKER_ENV, "SHOPSTREAM_FEATURES_APP_ID": f"faults-{uuid.uuid4().hex[:8]}", **(extra_env or {})}
        self.stack = ServiceStack(self.kafka.bootstrap_servers, self.redis.url, models_dir, tmp / "logs",
                                  partitions=PARTITIONS, extra_env=env)
        self.client = redis.Redis.from_url(self.redis.url, socket_timeout=5)

    def start_worker(self, timeout: float = 90.0):
        return self.stack.start_service("features", timeout=timeout)

    @property
    def worker(self):
        return self.stack.processes["features"]

    def kill_worker(self) -> None:
        proc = self.stack.processes.pop("features")
        proc.proc.kill()
        proc.proc.wait()

    def stop_worker(self) -> int | None:
        """SIGTERM; the exit status (0: a clean stop)."""
        proc = self.stack.processes.pop("features")
        return proc.stop(timeout=60)

    def worker_metric(self, name: str) -> float:
        text = metrics_text(self.stack.ports["features_metrics"], timeout=5, names=[name])
        return (metric_value(text, name) or 0.0) if text else 0.0

    def applied_count(self) -> int:
        return int(self.worker_metric("shopstream_features_events_applied_total"))

    def close(self) -> None:
        self.stack.stop()
        self.client.close()
        self.redis.stop()
        self.kafka.stop()
