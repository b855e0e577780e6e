"""The stream processors: events into user state, catalog records into the catalog.

Batches come from faust's public ``Stream.take_events(max_, within)``. How faust
acks them (faust 0.15, ``faust/streams.py``): ``take_events`` turns the stream's
own per-event acks off and acks every event of a batch itself, in a ``finally``
around its ``yield``, i.e. once the agent's loop body has finished with the
batch and asks for the next one. Acked events become committable; faust commits
them on its commit interval, at rebalance and at shutdown.

So the batch is acked only after ``process`` wrote it to Redis, on one
condition: the body must not leave the loop while it holds an unwritten batch,
because leaving (an exception, or the generator being closed) runs the same
``finally`` and acks the batch unwritten. Hence:

- ``write_batch`` does not return before the batch is written. Redis errors are
  retried inside the processors; anything else (a dead-letter send that fails, a
  bug) is retried here, with backoff, counted in ``batch_failures_total`` and
  reported by the liveness probe, which turns 503 while a batch fails: a
  restart (SIGKILL) then redelivers it, as any crash before the write does.
- Cancellation is the one way out, and faust cancels agents only after it has
  waited for every event handed to a stream to be acked
  (``Consumer.wait_empty`` at shutdown and rebalance), so never with a batch
  in flight.
- A worker killed before the write never acks, so the events are consumed again
  from the last commit; ``apply_events`` dedups by event id, so nothing counts
  twice.
"""
from __future__ import annotations

import logging
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
    each written before the next is taken (and so before faust acks it)."""
    health.agent_started(name)
    try:
        async for batch in stream.take_events(max_, within):
            # faust's Message already has topic/partition/offset/timestamp/key/value: no copy per event.
            await write_batch(name, write, [event.message for event in batch], health, metrics)
    except Exception as exc:  # faust restarts the actor; liveness says so until it does
        health.agent_crashed(name, exc)
        raise


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
