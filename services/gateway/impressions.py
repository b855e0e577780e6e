"""Served lists to Kafka (topic shopstream.impressions.v1) without touching the answer's latency.

``offer`` is what a request does: append to a bounded in-memory buffer, or, when the buffer
is full, drop the impression and count it (``shopstream_gateway_impressions_dropped_total``
{reason="buffer_full"}); it never waits. One background task drains the buffer: it takes
everything buffered (up to ``batch_max``, after waiting ``linger_s`` for a batch to gather),
publishes it (one acknowledged batch at a time, so what queued while one batch was out leaves
together in the next) and counts what Kafka
acknowledged, or what it refused or did not acknowledge in time (reason="publish_failed").
After a failure it waits ``retry_s`` before the next batch, so a broker outage costs one
attempt per ``retry_s`` while the buffer fills and drops are counted.

Why impressions have their own producer (aiokafka, on the event loop) when events go
through the contract's EventProducer (kafka-python, in an executor): every answer makes one
impression, so their publishing cost is paid per request, and kafka-python's per-record
path in a second thread costs the gateway several times aiokafka's (``bench/loop_cost.py``
measures the loop; docs/experiments.md, "Cost"). What the contract's producer guarantees
beyond that does not matter here: each publish is one ``ImpressionBatch`` record per
partition, the partition of each list chosen by its user id with the same partitioner
(murmur2, as the Java client), so a user's lists land in the same partition number as the
user's events; a retry may publish a list twice, which consumers de-duplicate by its
``recommendation_id`` (unique per answer); their order within a user does not matter.

At shutdown ``close`` publishes what is still buffered, within a bound.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from shopstream.events.v1 import events_pb2

from services.contract import impressions as contract_impressions
from services.contract import topics
from services.contract.producer import DEFAULT_TOPIC_PARTITIONS, create_topics
from services.gateway import metrics as m

logger = logging.getLogger(__name__)

Send = Callable[[Sequence[events_pb2.Impression]], Awaitable[int]]


def impression_of(resp, user_id: str, surface: str) -> events_pb2.Impression:
    """The impression of an answer (RecommendResponse or SimilarItemsResponse), served now."""
    impression = events_pb2.Impression(
        recommendation_id=resp.recommendation_id, user_id=user_id, variant=resp.variant,
        experiment=resp.experiment, model_version=resp.model_version, surface=surface,
        item_ids=[i.item_id for i in resp.items], degraded=resp.degraded)
    impression.served_at.FromNanoseconds(time.time_ns())
    return impression


class ImpressionLog:
    def __init__(self, send: Send, metrics: m.GatewayMetrics, capacity: int = 10_000, batch_max: int = 500,
                 retry_s: float = 1.0, close_sender: Callable[[], Awaitable[None]] | None = None,
                 linger_s: float = 0.0) -> None:
        self._send = send
        self._linger_s = linger_s
        self._close_sender = close_sender
        self._metrics = metrics
        self._capacity = capacity
        self._batch_max = batch_max
        self._retry_s = retry_s
        self._buffer: collections.deque[events_pb2.Impression] = collections.deque()
        self._waiting: asyncio.Event | None = None
        self._closed = False
        self._last_failure_log = float("-inf")

    def __len__(self) -> int:
        return len(self._buffer)

    def offer(self, impression: events_pb2.Impression) -> bool:
        """Buffer ``impression`` for publishing; False (dropped, counted) when the buffer is full
        or the log is closed. Called on the event loop; never blocks."""
        if self._closed or len(self._buffer) >= self._capacity:
            self._metrics.impressions_dropped.labels(m.BUFFER_FULL).inc()
            return False
        self._buffer.append(impression)
        if self._waiting is not None and not self._waiting.is_set():
            self._waiting.set()
        return True

    async def run(self) -> None:
        """Drain forever (cancel to stop) through ``send`` (a batch -> its publication)."""
        send = self._send
        self._waiting = asyncio.Event()
        while True:
            if not self._buffer:
                self._waiting.clear()
                self._metrics.impressions_buffered.set(0)
                await self._waiting.wait()
            if self._linger_s > 0 and len(self._buffer) < self._batch_max:
                # Let a batch gather: one produce request per batch, not per answer, is most of
                # what publishing costs the gateway and the broker.
                await asyncio.sleep(self._linger_s)
            if not await self._publish_batch(send):
                await asyncio.sleep(self._retry_s)

    async def _publish_batch(self, send: Send) -> bool:
        batch = [self._buffer.popleft() for _ in range(min(self._batch_max, len(self._buffer)))]
        self._metrics.impressions_buffered.set(len(self._buffer))
        try:
            await send(batch)
        except asyncio.CancelledError:
            self._buffer.extendleft(reversed(batch))  # close() may still publish them
            raise
        except Exception as exc:
            self._metrics.impressions_dropped.labels(m.PUBLISH_FAILED).inc(len(batch))
            now = time.monotonic()
            if now - self._last_failure_log >= 10.0:  # one line per 10 s through an outage
                self._last_failure_log = now
                logger.warning("%d impressions not published (%s); dropped and counted", len(batch),
                               exc or type(exc).__name__)
            return False
        self._metrics.impressions_published.inc(len(batch))
        return True

    async def close(self, timeout_s: float) -> None:
        """Stop taking impressions and publish what is buffered, for at most ``timeout_s``;
        what is left then is counted as dropped. Then the sender is closed."""
        self._closed = True
        try:
            async with asyncio.timeout(timeout_s):
                while self._buffer:
                    if not await self._publish_batch(self._send):
                        break
        except TimeoutError:
            pass
        if self._buffer:
            self._metrics.impressions_dropped.labels(m.PUBLISH_FAILED).inc(len(self._buffer))
            logger.warning("%d impressions still buffered at shutdown: dropped", len(self._buffer))
            self._buffer.clear()
        self._metrics.impressions_buffered.set(0)
        if self._close_sender is not None:
            await self._close_sender()

    @classmethod
    def to_kafka(cls, bootstrap_servers: str, timeout_s: float, metrics: m.GatewayMetrics, capacity: int,
                 batch_max: int, linger_s: float) -> "ImpressionLog":
        """The gateway's log, publishing to the impressions topic (``KafkaImpressions``)."""
        kafka = KafkaImpressions(bootstrap_servers, timeout_s)
        return cls(kafka.send, metrics, capacity, batch_max, close_sender=kafka.close, linger_s=linger_s)


class KafkaImpressions:
    """The impressions topic's producer: aiokafka on the event loop, connected on first use
    and replaced after a failure (a restarted broker), acks from all replicas.

    On (re)connecting it creates the impressions topic when missing, with the events topic's
    partition count (co-partitioned), as ``ensure_topics`` would. Call ``send`` from one task
    at a time (the ImpressionLog's drain)."""

    # Users' partitions remembered (the partitioner is pure Python, and users come back); cleared
    # when this many are held, and whenever the producer is replaced.
    PARTITION_CACHE = 100_000
    # Bytes per record batch (aiokafka's default is 16 KiB): room for a whole ImpressionBatch
    # record (at most contract_impressions.MAX_RECORD_BYTES of lists) and more, well below the
    # broker's default message.max.bytes (1 MiB).
    MAX_BATCH_BYTES = 256 * 1024

    def __init__(self, bootstrap_servers: str, timeout_s: float, linger_ms: int = 5) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._timeout_s = timeout_s
        self._linger_ms = linger_ms
        self._producer = None
        self._partitioner = None
        self._all_partitions: list[int] = []
        self._partition_of: dict[bytes, int] = {}
        self._keyless = 0

    async def send(self, impressions: Sequence[events_pb2.Impression]) -> int:
        """Publish ``impressions``; returns how many, once all are acknowledged; raises (and
        drops the producer) otherwise.

        One ``ImpressionBatch`` record per partition (``services.contract.impressions``), each
        holding the lists of the users whose key (user id) maps to that partition; lists without
        a user (SimilarItems') go to the partitions in turn. A record per answer made the
        consumer's per-record path most of what attributing a list cost (docs/experiments.md,
        "Cost")."""
        try:
            async with asyncio.timeout(self._timeout_s):
                producer = await self._connected()
                by_partition: dict[int, list[events_pb2.Impression]] = {}
                for imp in impressions:
                    by_partition.setdefault(self._partition(imp.user_id.encode() or None), []).append(imp)
                futures = [await producer.send(topics.IMPRESSIONS, value, partition=partition,
                                               headers=list(contract_impressions.BATCH_HEADERS))
                           for partition, imps in by_partition.items()
                           for value in contract_impressions.batch_values(imps)]
                await asyncio.gather(*futures)
        except BaseException:
            await self.close()
            raise
        return len(impressions)

    def _partition(self, key: bytes | None) -> int:
        """The key's partition by the producer's own partitioner (murmur2, as the events'); without
        a key, the partitions in turn."""
        if key is None:
            self._keyless = (self._keyless + 1) % len(self._all_partitions)
            return self._all_partitions[self._keyless]
        partition = self._partition_of.get(key)
        if partition is None:
            if len(self._partition_of) >= self.PARTITION_CACHE:
                self._partition_of.clear()
            partition = self._partition_of[key] = self._partitioner(key, self._all_partitions, self._all_partitions)
        return partition

    async def _connected(self):
        if self._producer is not None:
            return self._producer
        timeout_ms = max(1, int(self._timeout_s * 1000))
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap_servers.split(","), acks="all",
                                    linger_ms=self._linger_ms, request_timeout_ms=timeout_ms,
                                    max_batch_size=self.MAX_BATCH_BYTES,
                                    client_id="shopstream-gateway-impressions")
        try:
            await producer.start()
            await self._ensure_topic(producer)
            partitions = await producer.partitions_for(topics.IMPRESSIONS)
        except BaseException:
            await producer.stop()
            raise
        self._partitioner = DefaultPartitioner()
        self._all_partitions = sorted(partitions)
        self._partition_of = {}
        self._producer = producer
        return producer

    async def _ensure_topic(self, producer) -> None:
        """The impressions topic, created (when missing) with as many partitions as the events'."""
        partitions = len(await producer.partitions_for(topics.EVENTS) or ()) or DEFAULT_TOPIC_PARTITIONS
        await asyncio.to_thread(create_topics, self._bootstrap_servers, {topics.IMPRESSIONS: partitions},
                                timeout_s=self._timeout_s)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception as exc:  # already broken: nothing more to release
                logger.debug("closing the impressions producer: %s", exc)
