"""Liveness and readiness of the features worker (served by ``services.features.http``).

- live: the worker's event loop runs a check within ``loop_timeout_s``, no agent
  has crashed without faust restarting it, and no batch is failing (a failing
  batch is held unacked and retried, see ``agents``; a restart redelivers it).
  Redis being down is not a liveness failure: the processors retry Redis and
  a restart would not bring it back.
- ready: the consumer has partitions assigned and Redis answers a PING.

Both checks run on the worker's event loop (it owns the Redis client and the
consumer); the HTTP server calls them from its own thread.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Collection
from typing import Any

LIVE, READY = "live", "ready"


class WorkerHealth:
    def __init__(self, redis: Any, ping_timeout_s: float = 1.0, loop_timeout_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._ping_timeout_s = ping_timeout_s
        self._loop_timeout_s = loop_timeout_s
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._assignment: Callable[[], Collection] = lambda: ()
        self._crashed: dict[str, str] = {}  # agent -> why it stopped
        self._lost: dict[str, str] = {}  # agent -> why it holds unacked events no restart of it frees
        self._failing: dict[str, tuple[float, str]] = {}  # agent -> (since, last error)

    def bind(self, loop: asyncio.AbstractEventLoop, assignment: Callable[[], Collection]) -> None:
        """The worker's loop is running; ``assignment()`` is the consumer's current partitions."""
        self._loop = loop
        self._assignment = assignment

    # Reported by the agents (on the loop).
    def agent_started(self, name: str) -> None:
        self._crashed.pop(name, None)
        self._failing.pop(name, None)

    def agent_crashed(self, name: str, exc: BaseException) -> None:
        self._crashed[name] = repr(exc)

    def writer_stopped(self, name: str, exc: BaseException) -> None:
        """The agent's writer died holding events: only a process restart redelivers them."""
        self._lost[name] = repr(exc)

    def batch_failed(self, name: str, exc: BaseException) -> None:
        since = self._failing.get(name, (self._clock(), ""))[0]
        self._failing[name] = (since, repr(exc))

    def batch_written(self, name: str) -> None:
        if self._failing:
            self._failing.pop(name, None)

    # The checks (on the loop).
    async def live(self) -> tuple[bool, dict]:
        reasons = [f"agent {name} crashed: {why}" for name, why in sorted(self._crashed.items())]
        reasons += [f"agent {name}: writer stopped with events unacked, restart to redeliver: {why}"
                    for name, why in sorted(self._lost.items())]
        now = self._clock()
        reasons += [f"agent {name}: batch failing for {now - since:.1f}s, unacked: {why}"
                    for name, (since, why) in sorted(self._failing.items())]
        return (not reasons, {"live": not reasons, "reasons": reasons})

    async def ready(self) -> tuple[bool, dict]:
        reasons = []
        try:
            partitions = len(self._assignment())
        except Exception as exc:  # the consumer is not started yet
            partitions, why = 0, f" ({exc!r})"
        else:
            why = ""
        if not partitions:
            reasons.append("no partitions assigned" + why)
        try:
            await asyncio.wait_for(self._redis.ping(), self._ping_timeout_s)
        except Exception as exc:
            reasons.append(f"redis: no answer to PING ({exc!r})")
        return (not reasons, {"ready": not reasons, "partitions": partitions, "reasons": reasons})

    def check(self, which: str) -> tuple[bool, dict]:
        """Run the ``live`` or ``ready`` check from another thread."""
        loop = self._loop
        if loop is None:
            if which == LIVE:  # starting up: a liveness probe must not restart it for that
                return True, {"live": True, "reasons": [], "state": "starting"}
            return False, {"ready": False, "partitions": 0, "reasons": ["starting"]}
        check = (self.live if which == LIVE else self.ready)()
        try:
            future = asyncio.run_coroutine_threadsafe(check, loop)
        except RuntimeError as exc:  # the loop is closed: the worker has stopped
            check.close()
            return False, {which: False, "reasons": [f"event loop closed ({exc})"]}
        timeout = self._loop_timeout_s + (self._ping_timeout_s if which == READY else 0.0)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return False, {which: False, "reasons": [f"event loop did not run the check within {timeout:.0f}s"]}
        except Exception as exc:
            return False, {which: False, "reasons": [f"check failed: {exc!r}"]}
