"""The consumer's inline delivery: a coroutine started by hand, then awaited from where it stopped."""
import asyncio

import pytest

from services.features.transport import _Continue


async def _waits_on(fut: asyncio.Future, log: list) -> str:
    log.append("started")
    value = await fut
    log.append(value)
    return f"got {value}"


def _start(coro):
    """What the consumer does: run to the first suspension; the yielded future comes back."""
    return coro.send(None)


async def test_completed_inline_never_needs_a_task():
    async def quick() -> int:
        return 7

    with pytest.raises(StopIteration) as done:
        _start(quick())
    assert done.value.value == 7


async def test_a_suspended_delivery_resumes_with_the_result():
    fut, log = asyncio.get_running_loop().create_future(), []
    coro = _waits_on(fut, log)
    task = asyncio.ensure_future(_Continue(coro, _start(coro)))
    await asyncio.sleep(0)
    assert log == ["started"] and not task.done()
    fut.set_result("x")
    assert await task == "got x"
    assert log == ["started", "x"]


async def test_cancelling_a_suspended_delivery_cancels_the_coroutine():
    fut, log = asyncio.get_running_loop().create_future(), []
    coro = _waits_on(fut, log)
    task = asyncio.ensure_future(_Continue(coro, _start(coro)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fut.cancelled() and log == ["started"]


async def test_a_bare_yield_is_passed_through():
    async def twice() -> str:
        await asyncio.sleep(0)  # a bare yield: the loop reschedules it
        await asyncio.sleep(0)
        return "done"

    coro = twice()
    assert await _Continue(coro, _start(coro)) == "done"
