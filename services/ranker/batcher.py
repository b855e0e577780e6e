"""Dynamic micro-batching: concurrent callers' jobs become one call of a batch function.

``submit`` puts a job on a bounded queue (a full queue raises ResourceExhausted at once,
so overload costs a status code, not memory) and awaits its own future. One collector
task takes the first waiting job, then keeps taking jobs until the batch is full or
``max_wait_s`` has passed since that first job, and runs the batch function in the
executor; the event loop only awaits. While a batch runs, the next one fills up, so
under load batches grow by themselves and at low load a lone request waits at most
``max_wait_s``.

The batch function returns one result per job, in order; an item that is an
exception fails only that job. If the whole call raises, each job is retried alone,
so one bad request cannot fail its batch-mates.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

from services.common.errors import ResourceExhausted

logger = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")

BatchFn = Callable[[Sequence[J]], Sequence["R | BaseException"]]


@dataclass
class _Pending(Generic[J]):
    job: J
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[J, R]):
    def __init__(
        self,
        fn: BatchFn,
        executor: Executor | None,
        *,
        max_batch_size: int = 64,
        max_wait_s: float = 0.002,
        max_queue: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        """``on_batch(size, oldest_wait_s)`` is called once per batch (metrics)."""
        if max_batch_size < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_s >= 0")
        self._fn = fn
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Pending[J]] = asyncio.Queue(max_queue)
        self._on_batch = on_batch
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def submit(self, job: J) -> R:
        """The job's result; raises its own error, or ResourceExhausted when the queue is full."""
        self._ensure_started()
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(job, future))
        except asyncio.QueueFull:
            raise ResourceExhausted(f"ranker queue is full ({self._queue.maxsize} waiting)") from None
        return await future

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ranker-batcher")

    async def close(self) -> None:
        """Stop collecting; jobs still queued fail with ResourceExhausted."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(ResourceExhausted("ranker is shutting down"))

    async def _collect(self) -> list[_Pending[J]]:
        batch = [await self._queue.get()]
        deadline = batch[0].enqueued + self.max_wait_s
        loop = asyncio.get_running_loop()
        yielded = False
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            if not yielded:
                # Let every caller that is ready to submit do so (e.g. the clients woken by the
                # last batch's results), then drain them all without a task per job.
                yielded = True
                await asyncio.sleep(0)
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            yielded = False
            getter = loop.create_task(self._queue.get())
            done, _ = await asyncio.wait({getter}, timeout=remaining)
            if getter in done:
                batch.append(getter.result())
            else:
                getter.cancel()
                try:
                    batch.append(await getter)  # it may have won the race with cancel
                except asyncio.CancelledError:
                    break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            live = [p for p in batch if not p.future.done()]  # callers that gave up are skipped
            if not live:
                continue
            if self._on_batch is not None:
                self._on_batch(len(live), time.perf_counter() - live[0].enqueued)
            try:
                await self._execute(live)
            except asyncio.CancelledError:
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(ResourceExhausted("ranker is shutting down"))
                raise

    async def _execute(self, batch: list[_Pending[J]]) -> None:
        loop = asyncio.get_running_loop()
        jobs = [p.job for p in batch]
        try:
            results = await loop.run_in_executor(self._executor, self._fn, jobs)
            if len(results) != len(jobs):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(jobs)} jobs")
        except Exception as exc:  # noqa: BLE001 - isolated below
            if len(batch) == 1:
                results = [exc]
            else:
                logger.warning("batch of %d failed; retrying its jobs one by one", len(batch), exc_info=True)
                results = []
                for job in jobs:
                    try:
                        results.extend(await loop.run_in_executor(self._executor, self._fn, [job]))
                    except Exception as exc:  # noqa: BLE001 - routed to that caller only
                        results.append(exc)
        for pending, result in zip(batch, results):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

