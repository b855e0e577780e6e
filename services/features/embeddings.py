"""Batched, background refresh of user embeddings after their history changed.

``submit`` hands over the states that ``apply_events_with_states`` returned
(history and ``hist_version`` as written, so no second Redis read) and returns
at once; one background task encodes everything pending in one
``bundle.encode`` call in the executor (never on the event loop) and writes the
vectors with one ``put_embeddings`` pipeline. While an encode runs, newer
batches coalesce into the next one (one entry per user, the newest state), so a
backlog makes refresh batches larger instead of queueing work: the event loop
goes on applying events while the model runs on the other core.

Refreshes are paced: one starts at least ``min_interval_s`` after the previous
one started, and after an encode of ``t`` seconds the next waits at least
``t * (1 / max_duty - 1)``, so under a backlog the encoder holds at most
``max_duty`` of a core (it shares the machine with the event loop, Redis and the
broker) and each encode covers more users: every event of a user in that time
costs one encode, not one per batch. ``flush`` skips the pause, and so does an
idle apply side (no batch in progress, none and no submit for ``idle_s``): pacing only
protects apply from the encoder, so once the backlog is gone the users still
pending are encoded at once instead of after a pause nobody needs.

Each embedding records the ``hist_version`` it was computed from, so the ranker
can tell a stale one from a current one (and encodes on request when it is).
A refresh lost to a crash only leaves an embedding stale, never wrong.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import Protocol

from services.common.periodic import raise_if_cancelling
from services.common.stores.user_state import EmbeddingWrite, UserState, UserStateStore
from services.features.metrics import FeaturesMetrics
from services.features.models import EncoderHolder

logger = logging.getLogger(__name__)


class Clock(Protocol):
    """The refresher's time: its pacing reads ``now`` and waits with ``wait`` (tests pass a manual one)."""

    def now(self) -> float: ...

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        """Until ``event`` is set or ``timeout`` seconds have passed, whichever comes first."""


class LoopClock:
    """The running event loop's monotonic time."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass


class EmbeddingRefresher:
    def __init__(self, store: UserStateStore, models: EncoderHolder, executor: Executor,
                 metrics: FeaturesMetrics, min_interval_s: float = 0.0, max_duty: float = 1.0,
                 idle_s: float = 0.03, clock: Clock | None = None) -> None:
        self._store = store
        self._models = models
        self._executor = executor
        self._metrics = metrics
        self._min_interval_s = min_interval_s
        self._rest_per_busy = 1.0 / max_duty - 1.0
        self._idle_s = idle_s
        self._clock = clock if clock is not None else LoopClock()
        self._applying = 0  # batches in progress
        self._last_active = 0.0  # clock time a batch last started or ended, or users came in
        self._pending: dict[str, UserState] = {}
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()  # set by flush(): skip the pause

    @property
    def history_len(self) -> int:
        """History items the current model reads (0 = no model, nothing to refresh)."""
        bundle = self._models.bundle
        return int(bundle.max_len) if bundle is not None else 0

    async def wait_for_model(self, timeout_s: float = 30.0) -> None:
        """Until the first model load attempt is over (at most ``timeout_s``)."""
        attempted = getattr(self._models, "first_attempt", None)
        if attempted is None or attempted.is_set():
            return
        try:
            await asyncio.wait_for(attempted.wait(), timeout_s)
        except TimeoutError:
            logger.warning("no model after %.0fs; applying events without embeddings", timeout_s)

    def apply_started(self) -> None:
        """Apply began a batch: a pause in progress lasts (the encoder must not starve apply)."""
        self._applying += 1
        self._last_active = self._clock.now()

    def apply_done(self) -> None:
        """A batch is over; with none for ``idle_s``, a pause in progress ends early."""
        self._applying -= 1
        self._last_active = self._clock.now()

    def submit(self, states: Iterable[UserState]) -> None:
        """Queue these users for re-encoding; returns immediately (no model: dropped)."""
        if self._models.bundle is None:
            return
        self._last_active = self._clock.now()
        pending = self._pending
        for state in states:
            held = pending.get(state.user_id)
            if held is None or state.hist_version >= held.hist_version:
                pending[state.user_id] = state
        if pending and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="embedding-refresh")

    async def flush(self) -> None:
        """Wait until everything submitted so far is written (tests, shutdown), without pauses."""
        while self._task is not None and not self._task.done():
            self._wake.set()
            await asyncio.shield(self._task)

    async def _drain(self) -> None:
        clock = self._clock
        while self._pending:
            states, self._pending = list(self._pending.values()), {}
            started = clock.now()
            try:
                await self.refresh_states(states)
            except Exception:  # the ranker encodes on request while an embedding is stale
                raise_if_cancelling()
                self._metrics.embedding_refresh_failures.inc()
                logger.warning("embedding refresh failed for %d users", len(states), exc_info=True)
            busy = clock.now() - started
            pause = max(self._min_interval_s - busy, busy * self._rest_per_busy)
            await self._pause(clock.now() + pause)
        self._wake.clear()

    async def _pause(self, until: float) -> None:
        """Until ``until``, flush() or apply going idle; meanwhile later batches coalesce."""
        while not self._wake.is_set():
            now = self._clock.now()
            if now >= until or (not self._applying and now - self._last_active >= self._idle_s):
                return
            await self._clock.wait(self._wake, min(until - now, self._idle_s))

    async def refresh_states(self, states: list[UserState]) -> int:
        """Encode these states with the current model and write them; returns how many."""
        bundle = self._models.bundle
        if bundle is None or not states:
            return 0
        started = time.perf_counter()
        max_len = bundle.max_len
        histories = [s.history[-max_len:] for s in states]
        vectors = await asyncio.get_running_loop().run_in_executor(self._executor, bundle.encode, histories)
        await self._store.put_embeddings([
            EmbeddingWrite(user_id=s.user_id, model_version=bundle.version, hist_version=s.hist_version,
                           vector=vectors[i])
            for i, s in enumerate(states)
        ])
        self._metrics.embedding_refresh.observe(time.perf_counter() - started)
        self._metrics.embeddings_written.inc(len(states))
        return len(states)

    async def refresh(self, user_ids: list[str]) -> int:
        """Read these users' states from the store and re-encode them now (one round trip each way)."""
        bundle = self._models.bundle
        if bundle is None or not user_ids:
            return 0
        states = await self._store.get_states(user_ids, bundle.max_len, with_embedding=False)
        return await self.refresh_states(states)
