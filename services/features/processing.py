"""Where a batch of Kafka records becomes Redis writes.

Independent of faust (the agents hand over faust's messages as they are: each
already is a :class:`Record`), so the logic is testable with in-memory fakes.
Invalid records go to the dead-letter sink and never stop the batch. The Redis
part of a batch is retried until it succeeds: ``apply_events`` is idempotent per
event id, so a retry (or a redelivery after a crash) never double-counts.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from services.common.stores.catalog import CatalogStore
from services.common.stores.trending import TrendingStore
from services.common.stores.user_state import EventWrite, UserStateStore
from services.features.embeddings import EmbeddingRefresher
from services.features.metrics import FeaturesMetrics
from services.contract.validation import InvalidEvent, decode_catalog_item, decode_event

logger = logging.getLogger(__name__)


class Record(Protocol):
    """A consumed Kafka record: faust's ``Message`` is one as it is (no copy per event)."""

    topic: str
    partition: int
    offset: int
    timestamp: float  # Kafka message timestamp, seconds since the epoch
    key: bytes | None
    value: bytes | None  # None: a tombstone
    headers: Any  # (name, value) pairs, or a mapping of them


@dataclass(frozen=True)
class SourceRecord:
    """A :class:`Record` built by hand (tests, tools)."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def source(self) -> str:
        return source_of(self)


def source_of(record: Record) -> str:
    """Where a record came from, as ``topic/partition/offset`` (the dead-letter header)."""
    return f"{record.topic}/{record.partition}/{record.offset}"


class DeadLetterSink(Protocol):
    async def send(self, record: Record, reason: str) -> None: ...

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged."""


async def _retrying(what: str, fn, metrics: FeaturesMetrics, max_backoff_s: float = 5.0):
    """Run ``fn()`` until it succeeds on Redis; the batch must not be skipped (and not acked).

    Backoff 0.1 s doubling up to ``max_backoff_s``, forever; every retry counts in
    ``store_retries`` and is logged.
    """
    def before_sleep(state: RetryCallState) -> None:
        metrics.store_retries.inc()
        logger.warning("%s failed (%s); retrying in %.1fs", what, state.outcome.exception(),
                       state.next_action.sleep if state.next_action else 0.0)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type((RedisError, OSError)),
        wait=wait_exponential(multiplier=0.1, min=0.1, max=max_backoff_s),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await fn()


def _decode(decode: Callable[[bytes | None], Any], rec: Record) -> Any:
    """``decode(rec.value)``, any failure an InvalidEvent: whatever a record holds, it goes to the
    dead-letter topic and the rest of its batch is applied. The decoders raise InvalidEvent
    for every bad value they know of; anything else is a decoder bug, logged with its trace
    and dead-lettered as ``undecodable`` rather than stopping the partition."""
    try:
        return decode(rec.value)
    except InvalidEvent:
        raise
    except Exception as exc:
        logger.error("decoder failed on %s", source_of(rec), exc_info=True)
        raise InvalidEvent("undecodable", f"the decoder failed: {type(exc).__name__}") from None


async def _dead_letter(dlq: DeadLetterSink, metrics: FeaturesMetrics, rec: Record, exc: InvalidEvent) -> None:
    metrics.records_invalid.labels(rec.topic, exc.reason).inc()
    logger.info("dead-lettering record", extra={"reason": exc.reason, "source": source_of(rec),
                                                "error": exc.message})
    await dlq.send(rec, exc.reason)
    metrics.records_dead_lettered.labels(rec.topic).inc()


class EventBatchProcessor:
    def __init__(self, users: UserStateStore, trending: TrendingStore, embeddings: EmbeddingRefresher,
                 dead_letters: DeadLetterSink, metrics: FeaturesMetrics) -> None:
        self._users = users
        self._trending = trending
        self._embeddings = embeddings
        self._dlq = dead_letters
        self._metrics = metrics

    async def process(self, records: Sequence[Record]) -> int:
        """Apply a batch; returns how many events were new."""
        await self._embeddings.wait_for_model()
        self._embeddings.apply_started()  # the encoder's pacing pause lasts while apply is busy
        try:
            return await self._process(records)
        finally:
            self._embeddings.apply_done()

    async def _process(self, records: Sequence[Record]) -> int:
        m = self._metrics
        started = time.perf_counter()
        m.events_processed.inc(len(records))
        m.batch_size.observe(len(records))
        writes: list[EventWrite] = []
        timestamps: list[float] = []
        dead_lettered = False
        for rec in records:
            try:
                ev = _decode(decode_event, rec)
            except InvalidEvent as exc:
                await _dead_letter(self._dlq, self._metrics, rec, exc)
                dead_lettered = True
                continue
            at = ev.occurred_at
            writes.append(EventWrite(ev.event_id, ev.user_id, ev.item_id, ev.type,
                                     at.seconds * 1000 + at.nanos // 1_000_000))
            timestamps.append(rec.timestamp)

        new = await _retrying("apply batch", lambda: self._apply(writes), m) if writes else []
        if dead_lettered:
            await self._dlq.flush()

        now = time.time()
        observe = m.freshness.observe
        applied = 0
        for ts, fresh in zip(timestamps, new):
            if fresh:
                applied += 1
                observe(now - ts if now > ts else 0.0)
        m.events_applied.inc(applied)
        m.events_duplicate.inc(len(new) - applied)
        m.batch_seconds.observe(time.perf_counter() - started)
        return applied

    async def _apply(self, writes: list[EventWrite]) -> list[bool]:
        # One script call per user; it also returns the histories the model needs,
        # so the embedding refresh reads nothing back from Redis.
        applied = await self._users.apply_events_with_states(writes, self._embeddings.history_len)
        new = applied.new
        changed = {w.user_id for w, fresh in zip(writes, new) if fresh}
        # Off the critical path: encoding runs in the executor while the next batch is applied.
        self._embeddings.submit(applied.states[u] for u in changed)
        # Only events the dedup script saw for the first time count towards trending.
        await self._trending.record([(w.item_id, w.type_code) for w, fresh in zip(writes, new) if fresh])
        return new

    async def drain(self) -> None:
        """Wait for the background embedding refresh of everything processed so far."""
        await self._embeddings.flush()


class CatalogBatchProcessor:
    def __init__(self, catalog: CatalogStore, dead_letters: DeadLetterSink, metrics: FeaturesMetrics) -> None:
        self._catalog = catalog
        self._dlq = dead_letters
        self._metrics = metrics

    async def process(self, records: Sequence[Record]) -> int:
        """Upsert the valid catalog records (the last one per item wins); returns how many."""
        items = {}
        for rec in records:
            try:
                item = _decode(decode_catalog_item, rec)
            except InvalidEvent as exc:
                await _dead_letter(self._dlq, self._metrics, rec, exc)
                continue
            items[item.item_id] = item
        if items:
            await _retrying("catalog upsert", lambda: self._catalog.upsert(list(items.values())), self._metrics)
        await self._dlq.flush()
        self._metrics.catalog_applied.inc(len(items))
        return len(items)
