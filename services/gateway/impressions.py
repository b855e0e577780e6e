"""Served lists to Kafka (topic shopstream.impressions.v1) without touching the answer's latency.

``offer`` is what a request does: append to a bounded in-memory buffer, or, when the buffer
is full, drop the impression and count it (``shopstream_gateway_impressions_dropped_total``
{reason="buffer_full"}); it never waits. One background task drains the buffer: it takes
everything buffered (up to ``batch_max``), publishes it through the gateway's event producer
in the publish executor (one acknowledged batch at a time, so what queued while one batch
was out leaves together in the next) and counts what Kafka acknowledged, or what it refused
or did not acknowledge in time (reason="publish_failed"). After a failure it waits
``retry_s`` before the next batch, so a broker outage costs one attempt per ``retry_s``
while the buffer fills and drops are counted.

At shutdown ``close`` publishes what is still buffered, within a bound.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from shopstream.events.v1 import events_pb2

from services.gateway import metrics as m

logger = logging.getLogger(__name__)

Send = Callable[[Sequence[events_pb2.Impression]], int]


class ImpressionLog:
    def __init__(self, metrics: m.GatewayMetrics, capacity: int = 10_000, batch_max: int = 500,
                 retry_s: float = 1.0) -> None:
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

    async def run(self, send: Send, executor: Executor) -> None:
        """Drain forever (cancel to stop): ``send`` (blocking) runs in ``executor``."""
        self._waiting = asyncio.Event()
        loop = asyncio.get_running_loop()
        while True:
            if not self._buffer:
                self._waiting.clear()
                self._metrics.impressions_buffered.set(0)
                await self._waiting.wait()
            if not await self._publish_batch(loop, send, executor):
                await asyncio.sleep(self._retry_s)

    async def _publish_batch(self, loop, send: Send, executor: Executor) -> bool:
        batch = [self._buffer.popleft() for _ in range(min(self._batch_max, len(self._buffer)))]
        self._metrics.impressions_buffered.set(len(self._buffer))
        try:
            await loop.run_in_executor(executor, send, batch)
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

    async def close(self, send: Send, executor: Executor, timeout_s: float) -> None:
        """Stop taking impressions and publish what is buffered, for at most ``timeout_s``;
        what is left then is counted as dropped."""
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                while self._buffer:
                    if not await self._publish_batch(loop, send, executor):
                        break
        except TimeoutError:
            pass
        if self._buffer:
            self._metrics.impressions_dropped.labels(m.PUBLISH_FAILED).inc(len(self._buffer))
            logger.warning("%d impressions still buffered at shutdown: dropped", len(self._buffer))
            self._buffer.clear()
        self._metrics.impressions_buffered.set(0)
