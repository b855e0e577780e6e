"""MicroBatcher: batches formed, max wait honoured, results routed, backpressure, isolation.

No timed assertions and no sleeps that decide an outcome: the tests hold batch functions
on events and wait for conditions (``until``). ``max_wait_s`` only decides when a partial
batch closes, never which jobs are in it: every job a test expects in a batch is queued
before the collector runs.
"""
import asyncio
import threading

import grpc
import pytest

from services.common.batching import MicroBatcher
from services.common.errors import ResourceExhausted


async def until(condition, hang_guard_s: float = 30.0) -> None:
    """Yield to the loop (and the executor's threads) until ``condition()`` holds."""
    async with asyncio.timeout(hang_guard_s):
        while not condition():
            await asyncio.sleep(0.001)


class Recorder:
    """Batch function: records batch sizes; can be held closed until released."""

    def __init__(self, fail_on=None) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def __call__(self, jobs):
        self.entered.set()
        self.gate.wait()
        self.batches.append(list(jobs))
        if self.fail_on is not None and self.fail_on in jobs and len(jobs) > 1:
            raise RuntimeError("the whole batch blew up")
        return [ValueError(f"bad {j}") if j == self.fail_on else j * 10 for j in jobs]


async def test_concurrent_requests_form_batches_and_results_reach_their_caller():
    fn = Recorder()
    fn.gate.clear()  # hold the first batch so the rest pile up behind it
    batcher = MicroBatcher(fn, None, max_batch_size=8, max_wait_s=0.05)
    first = asyncio.create_task(batcher.submit(0))
    await until(fn.entered.is_set)  # job 0 is running alone; the rest queue behind it
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 21)]
    await asyncio.sleep(0)
    fn.gate.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [i * 10 for i in range(1, 21)]
    assert fn.batches[0] == [0]
    sizes = [len(b) for b in fn.batches[1:]]
    assert sum(sizes) == 20 and max(sizes) == 8 and len(sizes) == 3  # 8 + 8 + 4
    await batcher.close()


async def test_a_lone_request_is_served_after_max_wait_without_batch_mates():
    fn = Recorder()
    batcher = MicroBatcher(fn, None, max_batch_size=64, max_wait_s=0.01)
    assert await asyncio.wait_for(batcher.submit(7), timeout=30) == 70
    assert fn.batches == [[7]]
    await batcher.close()


async def test_max_wait_closes_a_partial_batch():
    fn = Recorder()
    batcher = MicroBatcher(fn, None, max_batch_size=64, max_wait_s=0.01)
    first = await asyncio.gather(*(batcher.submit(i) for i in range(3)))
    assert first == [0, 10, 20]
    later = await batcher.submit(3)  # a new batch after the first one closed on max_wait
    assert later == 30
    assert fn.batches == [[0, 1, 2], [3]]
    await batcher.close()


async def test_full_queue_is_resource_exhausted_not_unbounded():
    fn = Recorder()
    fn.gate.clear()
    batcher = MicroBatcher(fn, None, max_batch_size=1, max_wait_s=0, max_queue=2)
    running = asyncio.create_task(batcher.submit(0))
    await until(fn.entered.is_set)
    queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted) as err:
        await batcher.submit(3)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    fn.gate.set()
    assert await running == 0 and await asyncio.gather(*queued) == [10, 20]
    await batcher.close()


async def test_errors_are_isolated_per_request():
    fn = Recorder(fail_on=3)
    fn.gate.clear()
    batcher = MicroBatcher(fn, None, max_batch_size=8, max_wait_s=0.05)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(6)]
    await until(fn.entered.is_set)  # all six are in the one held batch
    fn.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [r for i, r in enumerate(results) if i != 3] == [0, 10, 20, 40, 50]
    assert isinstance(results[3], ValueError) and "bad 3" in str(results[3])
    assert fn.batches[0] == [0, 1, 2, 3, 4, 5]  # the whole batch failed, then each job alone
    await batcher.close()


async def test_per_item_exception_fails_only_that_caller():
    def fn(jobs):
        return [KeyError(j) if j % 2 else j for j in jobs]

    batcher = MicroBatcher(fn, None, max_batch_size=4, max_wait_s=0.05)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
    assert results[0] == 0 and results[2] == 2
    assert isinstance(results[1], KeyError) and isinstance(results[3], KeyError)
    await batcher.close()


async def test_close_fails_waiting_jobs_with_resource_exhausted():
    fn = Recorder()
    fn.gate.clear()
    batcher = MicroBatcher(fn, None, max_batch_size=1, max_wait_s=0)
    running = asyncio.create_task(batcher.submit(0))
    await until(fn.entered.is_set)
    waiting = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    close = asyncio.create_task(batcher.close())
    await until(running.done)  # close has cancelled the running batch (its thread is still held)
    fn.gate.set()
    await close
    for task in (running, waiting):
        with pytest.raises(ResourceExhausted):
            await task


def test_invalid_limits_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(lambda jobs: jobs, None, max_batch_size=0)


class AsyncGate:
    """A coroutine batch function (the gateway's RankBatch call): each batch waits for release."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()

    async def __call__(self, jobs):
        self.batches.append(list(jobs))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return [j * 10 for j in jobs]


async def test_a_coroutine_batch_function_runs_on_the_loop_with_at_most_max_in_flight_batches():
    fn = AsyncGate()
    batcher = MicroBatcher(fn, max_batch_size=4, max_wait_s=0, max_in_flight=2)
    first = [asyncio.create_task(batcher.submit(i)) for i in range(2)]
    await until(lambda: len(fn.batches) == 1)
    second = [asyncio.create_task(batcher.submit(i)) for i in range(2, 4)]
    await until(lambda: len(fn.batches) == 2)  # a second batch goes out while the first is running
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(4, 10)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(fn.batches) == 2 and batcher.depth == 6  # both slots busy: the rest wait in the queue
    fn.release.set()
    assert await asyncio.gather(*first, *second, *rest) == [i * 10 for i in range(10)]
    assert fn.most_running == 2
    assert [len(b) for b in fn.batches] == [2, 2, 4, 2]
    await batcher.close()


async def test_without_isolation_a_failed_call_fails_its_whole_batch_once():
    calls = []

    async def fn(jobs):
        calls.append(list(jobs))
        raise ConnectionError("peer gone")

    batcher = MicroBatcher(fn, max_batch_size=8, max_wait_s=0.05, isolate_failures=False)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert calls == [[0, 1, 2, 3, 4]]  # not retried one by one
    await batcher.close()


async def test_submit_many_queues_jobs_together_and_fails_only_what_does_not_fit():
    fn = Recorder()
    fn.gate.clear()
    batcher = MicroBatcher(fn, None, max_batch_size=8, max_wait_s=0, max_queue=4)
    running = asyncio.create_task(batcher.submit(0))
    await until(fn.entered.is_set)
    futures = batcher.submit_many(list(range(1, 7)))  # 4 fit, 2 do not
    fn.gate.set()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert await running == 0
    assert results[:4] == [10, 20, 30, 40]
    assert all(isinstance(r, ResourceExhausted) for r in results[4:])
    assert fn.batches == [[0], [1, 2, 3, 4]]
    await batcher.close()


async def test_batches_do_not_inherit_the_first_callers_context():
    import contextvars

    var = contextvars.ContextVar("request_id", default="none")
    seen = []

    async def fn(jobs):
        seen.append(var.get())
        return jobs

    batcher = MicroBatcher(fn, max_wait_s=0)
    var.set("first-caller")
    assert await batcher.submit(1) == 1
    assert seen == ["none"]
    await batcher.close()
