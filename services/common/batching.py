"""Dynamic micro-batching: concurrent callers' jobs become one call of a batch function.

``submit`` puts a job on a bounded queue (a full queue raises ResourceExhausted at once,
so overload costs a status code, not memory) and awaits its own future. One collector
takes the first waiting job, then keeps taking jobs until the batch is full or
``max_wait_s`` has passed since that first job, and starts the batch function on it.
At most ``max_in_flight`` batches run at a time; while they run the next one fills
up, so under load batches grow by themselves and at low load a lone request goes
out at once (``max_wait_s`` 0) or after at most ``max_wait_s``.

The batch function is either a plain function, run in ``executor`` (the ranker's
scoring: the event loop only awaits), or a coroutine function, awaited on the loop
(the gateway's RankBatch call). It returns one result per job, in order; an item that
is an exception fails only that job. If the whole call raises, each job is retried
alone when ``isolate_failures`` (one bad request cannot fail its batch-mates), else
every job of the batch gets that error (a failed RPC: retrying each would only fail
again).

Used by the ranker (services/ranker/server.py) and the gateway's ranker client.
"""
from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, Sequence, TypeVar, Union

from services.common.errors import ResourceExhausted

logger = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")

BatchResults = Sequence["R | BaseException"]
BatchFn = Union[Callable[[Sequence[J]], BatchResults], Callable[[Sequence[J]], Awaitable[BatchResults]]]


@dataclass
class _Pending(Generic[J]):
    job: J
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[J, R]):
    def __init__(
        self,
        fn: BatchFn,
        executor: Executor | None = None,
        *,
        max_batch_size: int = 64,
        max_wait_s: float = 0.002,
        max_queue: int = 1024,
        max_in_flight: int = 1,
        isolate_failures: bool = True,
        name: str = "batcher",
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        """``on_batch(size, oldest_wait_s)`` is called once per batch (metrics); ``name`` appears
        in errors and task names."""
        if max_batch_size < 1 or max_queue < 1 or max_wait_s < 0 or max_in_flight < 1:
            raise ValueError("max_batch_size, max_queue and max_in_flight must be >= 1, max_wait_s >= 0")
        self._fn = fn
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None))
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_in_flight = max_in_flight
        self._isolate = isolate_failures
        self._name = name
        self._queue: asyncio.Queue[_Pending[J]] = asyncio.Queue(max_queue)
        self._on_batch = on_batch
        self._task: asyncio.Task | None = None
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task] = set()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def _full(self) -> ResourceExhausted:
        return ResourceExhausted(f"{self._name} queue is full ({self._queue.maxsize} waiting)")

    async def submit(self, job: J) -> R:
        """The job's result; raises its own error, or ResourceExhausted when the queue is full."""
        self._ensure_started()
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(job, future))
        except asyncio.QueueFull:
            raise self._full() from None
        return await future

    def submit_many(self, jobs: Sequence[J]) -> list[asyncio.Future]:
        """One future per job, queued together so that they share batches (no task per job).

        A job that does not fit in the queue gets a future already failed with ResourceExhausted.
        """
        self._ensure_started()
        loop = asyncio.get_running_loop()
        futures = []
        for job in jobs:
            future = loop.create_future()
            try:
                self._queue.put_nowait(_Pending(job, future))
            except asyncio.QueueFull:
                future.set_exception(self._full())
            futures.append(future)
        return futures

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._slots = asyncio.Semaphore(self.max_in_flight)
            # A fresh context: the collector and its batches must not carry the first caller's
            # context variables (its request id) into everyone else's batches.
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"{self._name}-collector", context=contextvars.Context())

    async def close(self) -> None:
        """Stop collecting and cancel running batches; their jobs and queued ones fail with
        ResourceExhausted."""
        tasks = [t for t in (self._task, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(ResourceExhausted(f"{self._name} is shutting down"))

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
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                batch = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            live = [p for p in batch if not p.future.done()]  # callers that gave up are skipped
            if not live:
                self._slots.release()
                continue
            if self._on_batch is not None:
                self._on_batch(len(live), time.perf_counter() - live[0].enqueued)
            task = loop.create_task(self._execute_then_release(live), name=f"{self._name}-batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute_then_release(self, batch: list[_Pending[J]]) -> None:
        try:
            await self._execute(batch)
        except asyncio.CancelledError:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(ResourceExhausted(f"{self._name} is shutting down"))
            raise
        finally:
            assert self._slots is not None
            self._slots.release()

    async def _call(self, jobs: list[J]) -> BatchResults:
        if self._is_async:
            results = await self._fn(jobs)  # type: ignore[misc]
        else:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._fn, jobs)
        if len(results) != len(jobs):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(jobs)} jobs")
        return results

    async def _execute(self, batch: list[_Pending[J]]) -> None:
        jobs = [p.job for p in batch]
        try:
            results = await self._call(jobs)
        except Exception as exc:  # noqa: BLE001 - isolated below
            if len(batch) == 1 or not self._isolate:
                results = [exc] * len(batch)
            else:
                logger.warning("batch of %d failed; retrying its jobs one by one", len(batch), exc_info=True)
                results = []
                for job in jobs:
                    try:
                        results.extend(await self._call([job]))
                    except Exception as exc:  # noqa: BLE001 - routed to that caller only
                        results.append(exc)
        for pending, result in zip(batch, results):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
