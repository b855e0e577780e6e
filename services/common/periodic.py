"""Background loops that survive failed steps and still stop when cancelled.

A background loop (catalog refresh, model reload, readiness) catches Exception so
that one failed step, a Redis blip, does not kill it. But a cancellation that
arrives while a library call is in flight does not always come out as
CancelledError: Python 3.11's ``asyncio.timeout`` raises TimeoutError when its own
deadline and an outside cancel land in the same loop iteration, and a client library
may turn it into a connection error. Such a loop would log the "error", sleep and go
on forever, and shutdown (``cancel_tasks``) would wait for it forever (this hung the
test suite on a loaded machine). The task still knows it is being cancelled
(``Task.cancelling()``), so every such loop asks it after each step.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task was asked to stop, even if a library ate the cancel."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


async def run_periodically(step: Callable[[], Awaitable[object]], interval_s: float, *, what: str,
                           level: int = logging.WARNING) -> None:
    """Await ``step()`` every ``interval_s`` seconds until cancelled; a failed step is logged at
    ``level`` and the next one runs on time."""
    while True:
        try:
            await step()
        except Exception:  # one failed step must not end the loop
            raise_if_cancelling()
            logger.log(level, "%s failed", what, exc_info=True)
        raise_if_cancelling()
        await asyncio.sleep(interval_s)
