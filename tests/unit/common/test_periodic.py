"""Background loops keep going after a failed step and stop when cancelled, however the cancel surfaces."""
from __future__ import annotations

import asyncio

import pytest

from services.common.periodic import run_periodically


async def test_a_failed_step_is_retried_on_the_next_tick():
    calls = 0
    three = asyncio.Event()

    async def step():
        nonlocal calls
        calls += 1
        if calls == 3:
            three.set()
        raise RuntimeError("redis blip")

    task = asyncio.create_task(run_periodically(step, 0.001, what="test step"))
    await asyncio.wait_for(three.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls >= 3


def _turned_into_an_error():
    raise ConnectionError("connection closed by the client")


def _swallowed():
    return None  # eaten: the step ends as if it had succeeded


@pytest.mark.parametrize("on_cancel", [_turned_into_an_error, _swallowed])
async def test_a_cancel_that_a_library_mishandles_still_stops_the_loop(on_cancel):
    started = asyncio.Event()

    async def step():
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            on_cancel()

    task = asyncio.create_task(run_periodically(step, 0.001, what="test step"))
    await started.wait()
    task.cancel()
    await asyncio.wait({task}, timeout=2)  # not wait_for: it would wait for a loop that never stops
    assert task.cancelled(), "the loop went on after being cancelled"


async def test_shutdown_does_not_wait_forever_for_a_task_that_ignores_its_cancel(caplog):
    from services.common.grpc_server import cancel_tasks

    release = asyncio.Event()

    async def stubborn():
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass  # what a loop without raise_if_cancelling effectively did

    async def tick():
        await asyncio.sleep(0)

    polite = asyncio.create_task(run_periodically(tick, 0.001, what="polite"), name="polite")
    deaf = asyncio.create_task(stubborn(), name="deaf")
    await asyncio.sleep(0.01)
    await asyncio.wait_for(cancel_tasks([polite, deaf], timeout_s=0.1), 2)
    assert polite.cancelled() and not deaf.done()
    assert "deaf did not stop" in caplog.text
    release.set()
    deaf.cancel()
    await asyncio.wait({deaf}, timeout=1)
