"""The one way events and catalog records get onto Kafka.

Synchronous (kafka-python); async callers such as the gateway run it in an
executor. Events are keyed by user id so that each user's events land in one
partition, in order; catalog records are keyed by item id.

A producer outlives broker restarts. Every call is bounded by ``timeout_s`` and
fails with a ``KafkaError`` (or ``ConnectionError``) after it instead of hanging.
A kafka-python producer that failed is replaced by a fresh one: after a restart
that lost the broker's state (the embedded broker keeps nothing), the old
idempotent producer fails every later send with a fatal producer-id error, while a
fresh one works at once. Before a fresh producer sends, the topics this producer
published to are created again when missing, with the partition counts they had.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (
    AuthorizationError,
    CorruptRecordError,
    InvalidRecordError,
    InvalidTopicError,
    KafkaConfigurationError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    SaslAuthenticationFailedError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    UnsupportedVersionError,
)
from shopstream.catalog.v1 import catalog_pb2
from shopstream.events.v1 import events_pb2

from services.contract import topics
from services.contract.validation import validate_catalog_item, validate_event, validate_impression

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_TOPIC_PARTITIONS = 8  # topics created again after a restart, when their count was never seen
_MAX_ATTEMPTS = 3  # per call: the first producer, then fresh ones (the deadline usually ends it first)

_DEFAULTS = {
    "acks": "all",
    "retries": 5,
    "linger_ms": 5,
    "enable_idempotence": True,  # checked against the embedded broker (tansu) and Kafka
}

# The record or the configuration is at fault: a fresh producer would fail the same way.
_NOT_RECOVERABLE = (
    AuthorizationError, CorruptRecordError, InvalidRecordError, InvalidTopicError, KafkaConfigurationError,
    MessageSizeTooLargeError, SaslAuthenticationFailedError,
)


def _split(bootstrap_servers: str) -> list[str]:
    return [s.strip() for s in bootstrap_servers.split(",") if s.strip()]


class ProducerClosed(ConnectionError):
    """A send after ``close()``."""


@dataclass(slots=True)
class _Record:
    topic: str
    key: bytes | None
    value: bytes
    headers: list | None = None
    future: Any = None  # kafka-python's FutureRecordMetadata of the latest attempt
    error: Exception | None = None  # set when the latest attempt could not even be queued
    metadata: Any = None  # RecordMetadata once the broker acknowledged it
    generation: int = 0  # of the producer that has it


class EventProducer:
    """Validating producer for the events and catalog topics.

    ``timeout_s`` bounds every call (default: ``max_block_ms`` when given, else 30 s).
    ``connect=False`` connects on the first send instead of now, so a broker outage at
    start-up fails sends (retryably) instead of the constructor. One connection attempt
    at a time: callers that waited behind a failed attempt fail at once instead of each
    waiting out the bootstrap timeout in turn.
    """

    def __init__(self, bootstrap_servers: str, *, timeout_s: float | None = None,
                 topic_partitions: int = DEFAULT_TOPIC_PARTITIONS, connect: bool = True,
                 kafka_producer: Callable[..., KafkaProducer] = KafkaProducer, **producer_overrides) -> None:
        if timeout_s is None:
            timeout_s = producer_overrides.get("max_block_ms", DEFAULT_TIMEOUT_S * 1000) / 1000
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self._bootstrap_servers = bootstrap_servers
        self._timeout_s = timeout_s
        self._topic_partitions = topic_partitions
        self._kafka_producer = kafka_producer
        self._config = {**_DEFAULTS, **self._timeouts(timeout_s, producer_overrides), **producer_overrides,
                        "bootstrap_servers": _split(bootstrap_servers)}
        if not self._config["enable_idempotence"]:
            self._config.setdefault("max_in_flight_requests_per_connection", 1)  # retries must not reorder
        self._lock = threading.Lock()  # the producer, its generation, the topics seen
        self._connect_lock = threading.Lock()  # one connection attempt at a time
        self._producer: KafkaProducer | None = None
        self._generation = 0
        self._proven_generation = 0  # the latest producer that delivered something
        self._failed_attempts = 0
        self._closed = False
        self._recreate_topics = False
        self._partitions: dict[str, int | None] = {}  # topic -> partition count (None: not seen yet)
        self._unflushed: deque[_Record] = deque()  # sent with wait=False, not yet known to be delivered
        if connect:
            self._connected()

    @staticmethod
    def _timeouts(timeout_s: float, overrides: Mapping[str, Any]) -> dict[str, int]:
        """kafka-python's own bounds, derived from the one timeout: nothing it does blocks past it
        (bootstrap, metadata), and a record is given up when a call waiting for it would have."""
        timeout_ms = max(1, int(timeout_s * 1000))
        request_ms = min(timeout_ms, 15_000)
        linger_ms = overrides.get("linger_ms", _DEFAULTS["linger_ms"])
        # Records outlive the call that gave up on them by one more timeout: a slow producer is
        # not failed by a call's deadline alone (the next call finds its records delivered).
        return {"max_block_ms": timeout_ms, "bootstrap_timeout_ms": timeout_ms, "request_timeout_ms": request_ms,
                "delivery_timeout_ms": max(2 * timeout_ms, request_ms + linger_ms)}

    # -- sending ---------------------------------------------------------------

    def send_events(self, events: Sequence[events_pb2.Event], wait: bool = True) -> int:
        """Validate every event, then publish them all; raises InvalidEvent before sending any if one is bad.

        With ``wait`` this blocks until the broker acknowledged every record and
        raises the delivery error of one that could not be delivered within the
        timeout; returns the number of events sent. Without it, ``flush()`` delivers.
        """
        for ev in events:
            validate_event(ev)
        self._publish([_Record(topics.EVENTS, ev.user_id.encode(), ev.SerializeToString()) for ev in events], wait)
        return len(events)

    def send_impressions(self, impressions: Sequence[events_pb2.Impression], wait: bool = True) -> int:
        """Publish served lists to the impressions topic, keyed by user id like the events (so
        a user's impressions and events share a partition number); same contract as send_events.
        An impression without a user (SimilarItems) has no key."""
        for imp in impressions:
            validate_impression(imp)
        self._publish([_Record(topics.IMPRESSIONS, imp.user_id.encode() or None, imp.SerializeToString())
                       for imp in impressions], wait)
        return len(impressions)

    def send_catalog(self, items: Sequence[catalog_pb2.CatalogItem], wait: bool = True) -> int:
        """Validate and publish catalog records keyed by item id; same contract as send_events."""
        for item in items:
            validate_catalog_item(item)
        self._publish([_Record(topics.CATALOG, item.item_id.encode(), item.SerializeToString()) for item in items],
                      wait)
        return len(items)

    def send_raw(self, topic: str, key: bytes | None, value: bytes, headers=None, wait: bool = True):
        """Publish bytes as they are, unvalidated (tests, kcat-like tools); returns the record
        metadata (with ``wait``; else kafka-python's future of the first attempt)."""
        record = _Record(topic, key, value, headers)
        self._publish([record], wait)
        return record.metadata if wait else record.future

    def flush(self, timeout: float | None = None) -> None:
        """Deliver everything sent with ``wait=False``, sending again on a fresh producer what
        failed; raises when some record is still not delivered after ``timeout`` (default: the
        producer's), and keeps those for the next flush."""
        deadline = time.monotonic() + (self._timeout_s if timeout is None else timeout)
        with self._lock:
            records, self._unflushed = list(self._unflushed), deque()
        try:
            self._deliver(records, deadline, queued=True)
        except BaseException:
            with self._lock:
                self._unflushed.extendleft(reversed([r for r in records if r.metadata is None]))
            raise

    def _publish(self, records: list[_Record], wait: bool) -> None:
        deadline = time.monotonic() + self._timeout_s
        if wait:
            self._deliver(records, deadline, queued=False)
            return
        self._queue(records, deadline)  # batched by kafka-python; delivered by flush()
        with self._lock:
            self._unflushed.extend(records)
            head_failed = self._drop_delivered()
        if head_failed:  # the producer broke: recover now rather than pile up records behind it
            self.flush()

    def _drop_delivered(self) -> bool:
        """Forget the delivered records at the head of the unflushed ones (so a long
        replay keeps no more than is in flight); whether the head one failed."""
        while self._unflushed:
            future = self._unflushed[0].future
            if future is None or (future.is_done and future.failed()):
                return True
            if not future.is_done:
                return False
            self._unflushed.popleft()
        return False

    def _deliver(self, records: list[_Record], deadline: float, queued: bool) -> None:
        """Queue (unless ``queued``) and await ``records``; those that fail recoverably are
        sent again on a fresh producer while the deadline allows."""
        pending = records
        for attempt in itertools.count(1):
            if not queued:
                self._queue(pending, deadline, flush=True)
            queued = False
            self._await(pending, deadline)
            failed = [r for r in pending if r.metadata is None]
            if not failed:
                return
            reported = [r.error for r in failed if r.error is not None]
            error = reported[0] if reported else self._failure(failed[0])
            if isinstance(error, _NOT_RECOVERABLE) or not isinstance(error, KafkaError):
                raise error
            # The next try gets a fresh producer when this one failed records (an old one may
            # never recover: a broker that lost its producer ids fails all its sends), or when it
            # delivered before and now delivers nothing in time (its broker went away). A fresh
            # one that is merely slow is kept: replacing it would start the same wait over.
            generation = max(r.generation for r in failed)
            if reported or generation <= self._proven_generation:
                self._discard(generation, unknown_topic=isinstance(error, UnknownTopicOrPartitionError))
            if attempt >= _MAX_ATTEMPTS or time.monotonic() >= deadline:
                raise error
            logger.warning("%d records not delivered (%s): sending them again on a fresh producer", len(failed), error)
            pending = failed

    def _queue(self, records: list[_Record], deadline: float, flush: bool = False) -> None:
        """Hands the records to the current producer (connecting when there is none); with
        ``flush``, sends them now, without lingering. A record the producer refuses keeps the
        error, and so does every one after it."""
        producer, generation = self._connected()
        with self._lock:
            for topic in {r.topic for r in records}:
                self._partitions.setdefault(topic, None)
        refused: Exception | None = None
        for record in records:
            record.future, record.error, record.metadata, record.generation = None, refused, None, generation
            if refused is not None:
                continue
            try:
                record.future = producer.send(record.topic, key=record.key, value=record.value,
                                              headers=record.headers)
            except KafkaError as exc:  # metadata not fetched in time, or closed by another thread's recovery
                record.error = refused = exc
        if flush and refused is None:
            try:
                producer.flush(max(0.0, deadline - time.monotonic()))  # no linger: a caller waits
            except KafkaError:
                pass  # _await reports what did not arrive

    def _await(self, records: Iterable[_Record], deadline: float) -> None:
        learned: set[str] = set()
        proven = 0
        for record in records:
            if record.future is None:
                continue
            try:
                record.metadata = record.future.get(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaError as exc:
                record.error = exc if record.future.is_done else None  # None: not acknowledged in time
                continue
            if record.generation == self._generation:  # its producer has the topic's metadata
                learned.add(record.topic)
            proven = max(proven, record.generation)
        if proven > self._proven_generation:
            with self._lock:
                self._proven_generation = max(self._proven_generation, proven)
        self._learn_partitions(learned)

    @staticmethod
    def _failure(record: _Record) -> Exception:
        if record.error is not None:
            return record.error
        return KafkaTimeoutError(f"{record.topic}: not acknowledged within the timeout")

    # -- the kafka-python producer -----------------------------------------------

    def _connected(self) -> tuple[KafkaProducer, int]:
        failed_before = self._failed_attempts
        with self._connect_lock:
            with self._lock:
                if self._closed:
                    raise ProducerClosed("the event producer is closed")
                if self._producer is not None:
                    return self._producer, self._generation
            if self._failed_attempts != failed_before:
                raise ConnectionError("Kafka is unreachable (the connection attempt just before this one failed)")
            try:
                producer = self._new_producer()
            except Exception:
                self._failed_attempts += 1
                raise
            try:
                if self._recreate_topics:
                    self._create_missing_topics()
            except Exception:
                self._failed_attempts += 1
                _close_quietly(producer, 0)
                raise
            with self._lock:
                if self._closed:  # closed while connecting
                    _close_quietly(producer, 0)
                    raise ProducerClosed("the event producer is closed")
                self._producer, self._recreate_topics = producer, False
                self._generation += 1
                return producer, self._generation

    def _new_producer(self) -> KafkaProducer:
        try:
            return self._kafka_producer(**self._config)
        except UnsupportedVersionError:
            # Brokers without idempotent producers: keep ordering under retries another way.
            logger.warning("broker does not support idempotent producers; sending one request at a time")
            self._config.update(enable_idempotence=False, max_in_flight_requests_per_connection=1)
            return self._kafka_producer(**self._config)

    def _discard(self, generation: int, unknown_topic: bool = False) -> None:
        """Drops the producer of ``generation`` (unless another caller already did): the next
        send connects a fresh one, which first creates the topics again when missing."""
        with self._lock:
            if self._generation != generation or self._producer is None:
                return
            producer, self._producer = self._producer, None
            self._recreate_topics = True
        logger.warning("dropping the Kafka producer after a failure%s",
                       " (unknown topic)" if unknown_topic else "")
        # Its records are given up after the delivery timeout; closing waits for that, so not here.
        threading.Thread(target=_close_quietly, args=(producer, self._timeout_s), daemon=True,
                         name="shopstream-producer-close").start()

    def _learn_partitions(self, topic_names: Iterable[str]) -> None:
        """Remembers the partition count of topics the current producer delivered to (known to it
        by now, so this does not block), so that they are created again as they were."""
        with self._lock:
            producer = self._producer
            unknown = [t for t in topic_names if self._partitions.get(t) is None]
        if producer is None or not unknown:
            return
        for topic in unknown:
            try:
                count = len(producer.partitions_for(topic))
            except KafkaError:
                continue
            with self._lock:
                self._partitions[topic] = count

    def _create_missing_topics(self) -> None:
        with self._lock:
            wanted = {t: n or self._topic_partitions for t, n in self._partitions.items()}
        if wanted:
            create_topics(self._bootstrap_servers, wanted, timeout_s=self._timeout_s, **self._admin_overrides())

    def _admin_overrides(self) -> dict[str, Any]:
        """The connection settings (security, DNS, ...) the admin client shares with the producer."""
        return {k: v for k, v in self._config.items()
                if k in KafkaAdminClient.DEFAULT_CONFIG and k not in ("bootstrap_servers", "client_id")}

    # -- lifecycle -----------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            producer, self._producer, self._closed = self._producer, None, True
        if producer is not None:
            producer.close(timeout)

    def __enter__(self) -> "EventProducer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _close_quietly(producer: KafkaProducer, timeout: float) -> None:
    """Closes a producer that failed; its undelivered records fail on their own (delivery timeout)."""
    for _ in range(3):  # close() refuses while records are pending; they expire in the meantime
        try:
            producer.close(timeout)
            return
        except KafkaError as exc:
            logger.debug("closing a failed producer: %s", exc)
    logger.warning("a failed Kafka producer did not close: its records never completed")


def create_topics(bootstrap_servers: str, partitions: Mapping[str, int], replication_factor: int = 1,
                  timeout_s: float = DEFAULT_TIMEOUT_S, **admin_overrides) -> list[str]:
    """Creates the topics of ``partitions`` (name -> partition count) that are missing; returns
    the ones created."""
    timeout_ms = max(1, int(timeout_s * 1000))
    admin = KafkaAdminClient(bootstrap_servers=_split(bootstrap_servers), client_id="shopstream-admin",
                             **{"request_timeout_ms": timeout_ms, "bootstrap_timeout_ms": timeout_ms,
                                **admin_overrides})
    created = []
    try:
        for name, count in partitions.items():
            try:
                admin.create_topics([NewTopic(name, count, replication_factor)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
            except KafkaError as exc:
                if "already exists" not in str(exc).lower():
                    raise
    finally:
        admin.close()
    if created:
        logger.info("created topics %s", {name: partitions[name] for name in created})
    return created


def ensure_topics(bootstrap_servers: str, partitions: int, replication_factor: int = 1) -> list[str]:
    """Create the events, catalog, dead-letter and impressions topics when missing (all with
    ``partitions``: impressions are co-partitioned with the events); returns the ones created."""
    names = (topics.EVENTS, topics.CATALOG, topics.EVENTS_DEAD_LETTER, topics.IMPRESSIONS)
    return create_topics(bootstrap_servers, {name: partitions for name in names}, replication_factor)
