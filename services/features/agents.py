"""The stream processors: events into user state, catalog records into the catalog.

Batches come from faust's public ``Stream.take_events(max_, within)``. How faust
acks them (faust 0.15, ``faust/streams.py``): ``take_events`` turns the stream's
own per-event acks off and acks every event of a batch itself (``Stream.ack``),
in a ``finally`` around its ``yield``: once the loop body has finished with the
batch, or left the loop. While the body holds a batch, the stream takes no new
events. Acked events become committable; faust commits them on its commit
interval, at rebalance and at shutdown.

Here the body does not write: it takes one more reference on each message
(``Message.incref``, the reference count faust keeps per channel a message went
to) and hands the batch to the agent's one writer task, so the stream gathers
the next batch while Redis writes this one. ``take_events``' ack then only
drops faust's reference; the message becomes committable when the writer acks
it (``Stream.ack``) after ``process`` has written it. So:

- a batch is acked only after its Redis write, whatever the body does;
- the writer writes in arrival order, one write at a time, and when it falls
  behind it writes everything queued in one call (up to ``max_`` events): under
  a backlog batches grow, as the Redis round trips and script calls per event
  shrink, instead of the backlog growing;
- the writer holds at most ``2 * max_`` events; beyond that the body waits, the
  stream buffer fills and faust pauses the partitions (backpressure);
- a write is retried until it succeeds (``write_batch``): Redis errors inside the
  processors, anything else (a dead-letter send that fails, a bug) here, with
  backoff, counted in ``batch_failures_total`` and reported by the liveness
  probe, which turns 503 while a batch fails; a restart then redelivers it. Should
  the writer itself die, its events stay unacked and the probe stays 503 until the
  process restarts (a restarted agent does not get them back);
- faust waits for every event handed to a stream to be acked before it stops
  the agents or finishes a rebalance (``Consumer.wait_empty``), so the writer
  drains before it is cancelled; a worker killed earlier never acked, so the
  events are consumed again from the last commit, and ``apply_events`` dedups
  by event id, so nothing counts twice.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import faust
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from services.features.health import WorkerHealth
from services.features.metrics import FeaturesMetrics
from services.features.processing import CatalogBatchProcessor, EventBatchProcessor, Record
from services.features.settings import FeaturesSettings
from services.features.topics import FeatureTopics

logger = logging.getLogger(__name__)

Write = Callable[[Sequence[Record]], Awaitable[int]]


def register_agents(app: faust.App, topics: FeatureTopics, settings: FeaturesSettings,
                    events: EventBatchProcessor, catalog: CatalogBatchProcessor,
                    health: WorkerHealth, metrics: FeaturesMetrics) -> None:
    within = settings.batch_window_ms / 1000.0

    @app.agent(topics.events, name="process_events")
    async def process_events(stream):
        await write_batches("process_events", stream, events.process, settings.batch_size, within, health, metrics)

    @app.agent(topics.catalog, name="apply_catalog_updates")
    async def apply_catalog_updates(stream):
        await write_batches("apply_catalog_updates", stream, catalog.process, settings.batch_size, within,
                            health, metrics)


async def write_batches(name: str, stream: faust.StreamT, write: Write, max_: int, within: float,
                        health: WorkerHealth, metrics: FeaturesMetrics) -> None:
    """The body of an agent: batches of up to ``max_`` events (waiting at most ``within`` s),
    handed to a writer that acks each event after writing it (see the module doc)."""
    writer = BatchWriter(name, stream, write, max_, health, metrics)
    health.agent_started(name)
    task = asyncio.get_running_loop().create_task(writer.run(), name=f"{name}-writer")
    try:
        async for batch in stream.take_events(max_, within):
            for event in batch:
                event.message.incref()  # the writer's reference: not committable before it acks
            await writer.put(batch)
    except Exception as exc:  # faust restarts the actor; liveness says so until it does
        health.agent_crashed(name, exc)
        raise
    finally:
        task.cancel()


class BatchWriter:
    """Writes the agent's batches in order, one write at a time, and acks their events after."""

    def __init__(self, name: str, stream: faust.StreamT, write: Write, max_: int, health: WorkerHealth,
                 metrics: FeaturesMetrics) -> None:
        self._name = name
        self._stream = stream
        self._write = write
        self._max = max_
        self._limit = 2 * max_
        self._health = health
        self._metrics = metrics
        self._queued: deque[Sequence[faust.EventT]] = deque()
        self._held = 0  # events queued or being written
        self._changed = asyncio.Event()
        self._stopped: BaseException | None = None

    async def put(self, events: Sequence[faust.EventT]) -> None:
        """Queue a batch; waits while the writer holds ``2 * max_`` events or more."""
        while self._held >= self._limit and self._stopped is None:
            self._changed.clear()
            await self._changed.wait()
        if self._stopped is not None:  # the agent crashes, unacked; faust restarts it
            raise RuntimeError(f"{self._name} writer stopped") from self._stopped
        self._queued.append(events)
        self._held += len(events)
        self._changed.set()

    async def run(self) -> None:
        try:
            await self._run()
        except BaseException as exc:
            self._stopped = exc
            self._changed.set()
            if not isinstance(exc, asyncio.CancelledError):
                self._health.writer_stopped(self._name, exc)
            raise

    async def _run(self) -> None:
        while True:
            while not self._queued:
                self._changed.clear()
                await self._changed.wait()
            events = list(self._queued.popleft())
            while self._queued and len(events) + len(self._queued[0]) <= self._max:
                events.extend(self._queued.popleft())
            await write_batch(self._name, self._write, [event.message for event in events], self._health,
                              self._metrics)
            for event in events:
                await self._stream.ack(event)
            self._held -= len(events)
            self._changed.set()


async def write_batch(name: str, write: Write, records: Sequence[Record], health: WorkerHealth,
                      metrics: FeaturesMetrics, max_backoff_s: float = 5.0) -> int:
    """``write(records)`` until it succeeds: backoff 0.1 s doubling to ``max_backoff_s``,
    forever (an unwritten batch must not be acked); cancellation is not retried."""
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception()
        metrics.batch_failures.labels(name).inc()
        health.batch_failed(name, exc)
        logger.error("%s: batch of %d records failed (%r); retrying in %.1fs, unacked", name, len(records),
                     exc, state.next_action.sleep if state.next_action else 0.0,
                     exc_info=(type(exc), exc, exc.__traceback__))

    retrying = AsyncRetrying(retry=retry_if_exception_type(Exception), before_sleep=before_sleep,
                             wait=wait_exponential(multiplier=0.1, min=0.1, max=max_backoff_s), reraise=True)
    async for attempt in retrying:
        with attempt:
            written = await write(records)
    health.batch_written(name)
    return written
