"""MicroBatcher: batches formed, max wait honoured, results routed, backpressure, isolation.

No timed assertions: waits are driven by events and by ``max_wait_s`` values far
from anything a slow CI box could confuse.
"""
import asyncio
import threading

import grpc
import pytest

from services.ranker.batcher import MicroBatcher
from services.common.errors import ResourceExhausted


async def until(condition) -> None:
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
    await asyncio.sleep(0.01)
    fn.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [r for i, r in enumerate(results) if i != 3] == [0, 10, 20, 40, 50]
    assert isinstance(results[3], ValueError) and "bad 3" in str(results[3])


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
    await asyncio.sleep(0.01)
    fn.gate.set()
    await close
    for task in (running, waiting):
        with pytest.raises(ResourceExhausted):
            await task


def test_invalid_limits_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(lambda jobs: jobs, None, max_batch_size=0)
