"""The stream processors: events into user state, catalog records into the catalog.

Events come from faust's public stream API: ``stream.noack().events()``
(``Stream.noack``: "a new stream where acks are manual"; ``Stream.events``: the
stream's events). The agent's body only queues each event for the agent's one
writer task, which writes them in batches and acks every event (``Stream.ack``)
after ``process`` has written it; faust commits acked events on its commit
interval, at rebalance and at shutdown. So:

- an event is acked only after its Redis write; nothing else acks it;
- the stream keeps taking events while the writer writes: a batch is what
  queued during the previous write (up to ``max_``), so under a backlog batches
  grow as far as the stream feeds them and the Redis round trips and script
  calls per event shrink; when the queue was empty the writer waits for more
  until ``within`` after the first event (or ``max_`` queued), so a trickle
  costs one write per window rather than one per event, and an event waits at
  most ``within`` (plus the write in progress) before its own write starts;
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

Not ``Stream.take_events(max_, within)`` (the previous version): its ``within``
is a fixed period between batches, not a wait from the first event; it adds a
buffering processor and its own per-event ack to every event, and while the body
held a batch the stream took none. Measured in docs/performance.md ("Measured
2026-12-03").
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
    """The body of an agent: every event goes to a writer that writes them in batches of up to
    ``max_`` (waiting at most ``within`` s after the first) and acks each after its write."""
    writer = BatchWriter(name, stream, write, max_, health, metrics, within=within)
    health.agent_started(name)
    task = asyncio.get_running_loop().create_task(writer.run(), name=f"{name}-writer")
    add, room = writer.add, writer.room
    try:
        async for event in stream.noack().events():  # acked by the writer, after the write
            if not room.is_set():
                await writer.wait_room()
            add(event)
    except Exception as exc:  # faust restarts the actor; liveness says so until it does
        health.agent_crashed(name, exc)
        raise
    finally:
        task.cancel()


class BatchWriter:
    """Writes the agent's events in order, in batches, one write at a time, and acks them after.

    A batch is what queued while the previous write ran, up to ``max_`` events; when the
    queue was empty, the writer waits for more until ``within`` s after the first event came
    (or ``max_`` are queued), so a trickle costs one write per window, not one per event.
    """

    def __init__(self, name: str, stream: faust.StreamT, write: Write, max_: int, health: WorkerHealth,
                 metrics: FeaturesMetrics, within: float = 0.0) -> None:
        self._name = name
        self._stream = stream
        self._write = write
        self._max = max_
        self._limit = 2 * max_
        self._within = within
        self._health = health
        self._metrics = metrics
        self._queued: deque[faust.EventT] = deque()
        self._first_at = 0.0  # loop time the oldest queued event came
        self._held = 0  # events queued or being written
        self._arrived = asyncio.Event()  # set when the queue is no longer empty, or holds max_
        self.room = asyncio.Event()  # set while the writer holds less than 2 * max_ events
        self.room.set()
        self._stopped: BaseException | None = None
        self._loop = asyncio.get_running_loop()

    def add(self, event: faust.EventT) -> None:
        """Queue one event (the caller waits for :attr:`room` first)."""
        if self._stopped is not None:  # the agent crashes, unacked; faust restarts it
            raise RuntimeError(f"{self._name} writer stopped") from self._stopped
        queued = self._queued
        if not queued:
            self._first_at = self._loop.time()
            self._arrived.set()
        queued.append(event)
        self._held += 1
        if len(queued) >= self._max:
            self._arrived.set()
        if self._held >= self._limit:
            self.room.clear()

    async def put(self, events: Sequence[faust.EventT]) -> None:
        """Queue a batch of events, waiting for room first."""
        await self.wait_room()
        for event in events:
            self.add(event)

    async def wait_room(self) -> None:
        """Until the writer holds less than ``2 * max_`` events (or has stopped)."""
        while not self.room.is_set() and self._stopped is None:
            await self.room.wait()
        if self._stopped is not None:
            raise RuntimeError(f"{self._name} writer stopped") from self._stopped

    async def run(self) -> None:
        try:
            await self._run()
        except BaseException as exc:
            self._stopped = exc
            self.room.set()
            if not isinstance(exc, asyncio.CancelledError):
                self._health.writer_stopped(self._name, exc)
            raise

    async def _run(self) -> None:
        queued, loop, max_ = self._queued, self._loop, self._max
        while True:
            while not queued:
                self._arrived.clear()
                await self._arrived.wait()
            remaining = self._first_at + self._within - loop.time()
            if len(queued) < max_ and remaining > 0:  # a trickle: gather more for the window
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    pass
            n = min(len(queued), max_)
            events = [queued.popleft() for _ in range(n)]
            if queued:  # more than max_ were waiting: the rest goes next, without a window
                self._first_at = float("-inf")
            await write_batch(self._name, self._write, [event.message for event in events], self._health,
                              self._metrics)
            ack = self._stream.ack
            for event in events:
                await ack(event)
            self._held -= n
            if self._held < self._limit:
                self.room.set()


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
