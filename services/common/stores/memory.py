"""In-process implementations of the store Protocols, for unit tests and local runs.

They follow the Redis implementations rule for rule (the conformance suite in
tests/integration/test_stores_conformance.py runs both): the dedup window is per
user with a cap, evicting the oldest apply time first and, within one millisecond,
the smallest id (a sorted set's order); history is capped; ``hist_version`` counts
every new event; an embedding is current only for its model and ``hist_version``.
Nothing is shared between instances: one instance is one database.
"""
from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from shopstream.catalog.v1 import catalog_pb2

from services.common.stores.catalog import CatalogSnapshot
from services.common.stores.trending import _MIN_SCORE, EVENT_WEIGHTS
from services.common.stores.user_state import (
    EVENT_TYPE_NAMES,
    PURCHASE,
    AppliedEvents,
    EmbeddingWrite,
    EventWrite,
    UserState,
)


@dataclass
class _User:
    history: list[str] = field(default_factory=list)  # oldest first, at most history_cap
    purchased: set[str] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # the dedup window's ids
    window: list[tuple[int, str]] = field(default_factory=list)  # heap of (apply ms, event id)
    embedding: tuple[str, int, bytes] | None = None  # model, hist_version, float32 bytes


class MemoryUserStateStore:
    """UserStateStore in a dict. ``clock`` (seconds) stamps the dedup window as Redis's
    ``now_ms`` does; it only decides which ids a full window forgets first."""

    def __init__(self, history_cap: int = 200, dedup_cap: int = 5000,
                 clock: Callable[[], float] = time.time) -> None:
        self._history_cap = history_cap
        self._dedup_cap = dedup_cap
        self._clock = clock
        self._users: dict[str, _User] = {}
        self.forgotten: dict[str, int] = {}  # user -> forget ms (the Redis tombstones)

    async def apply_events(self, events: Sequence[EventWrite]) -> list[bool]:
        """Apply events in order; returns, per event, whether it was new (not a redelivery)."""
        return (await self.apply_events_with_states(events, 0)).new

    async def apply_events_with_states(self, events: Sequence[EventWrite], history_len: int) -> AppliedEvents:
        """As RedisUserStateStore: the states hold each batch user's newest ``history_len``
        items (none for 0) and ``hist_version``, not purchases or embeddings."""
        now_ms = int(self._clock() * 1000)
        new: list[bool] = []
        pushed: dict[str, int] = {}
        for event_id, user_id, item_id, type_code, occurred_ms in events:
            user = self._users.setdefault(user_id, _User())
            pushed.setdefault(user_id, 0)
            if event_id in user.seen or occurred_ms <= self.forgotten.get(user_id, -1):
                new.append(False)
                continue
            user.seen.add(event_id)
            heapq.heappush(user.window, (now_ms, event_id))
            while len(user.window) > self._dedup_cap:
                user.seen.discard(heapq.heappop(user.window)[1])
            user.history.append(item_id)
            if type_code == PURCHASE:
                user.purchased.add(item_id)
            name = EVENT_TYPE_NAMES.get(type_code, str(type_code))
            user.counters[name] = user.counters.get(name, 0) + 1
            if occurred_ms > user.counters.get("last_event_ms", 0):
                user.counters["last_event_ms"] = occurred_ms
            pushed[user_id] += 1
            new.append(True)
        states: dict[str, UserState] = {}
        for user_id, count in pushed.items():
            user = self._users[user_id]
            if count:
                del user.history[:-self._history_cap]
                user.counters["events"] = user.counters.get("events", 0) + count
                user.counters["hist_version"] = user.counters.get("hist_version", 0) + count
            states[user_id] = UserState(user_id=user_id, history=_newest(user.history, history_len),
                                        hist_version=user.counters.get("hist_version", 0))
        return AppliedEvents(new, states)

    async def get_states(self, user_ids: Sequence[str], history_len: int, *,
                         with_embedding: bool = True) -> list[UserState]:
        """Each user's newest ``history_len`` items (none for 0), purchases, ``hist_version``
        and, with ``with_embedding``, the stored embedding (read-only, as from Redis)."""
        states = []
        for user_id in user_ids:
            user = self._users.get(user_id) or _User()
            state = UserState(user_id=user_id, history=_newest(user.history, history_len),
                              purchased=set(user.purchased), hist_version=user.counters.get("hist_version", 0))
            if with_embedding and user.embedding is not None:
                model, hist_version, vec = user.embedding
                state.embedding = np.frombuffer(vec, dtype=np.float32)
                state.embedding_model = model
                state.embedding_hist_version = hist_version
            states.append(state)
        return states

    async def put_embeddings(self, writes: Sequence[EmbeddingWrite]) -> None:
        for w in writes:
            vec = np.ascontiguousarray(w.vector, dtype=np.float32).tobytes()
            self._users.setdefault(w.user_id, _User()).embedding = (w.model_version, int(w.hist_version), vec)

    async def forget(self, user_id: str, now_ms: int) -> int:
        user = self._users.pop(user_id, None)
        self.forgotten[user_id] = now_ms
        if user is None:
            return 0
        return sum(bool(part) for part in (user.history, user.purchased, user.counters, user.seen, user.embedding))

    def counters(self, user_id: str) -> dict[str, int]:
        """The user's counters hash (``events``, per type, ``hist_version``, ``last_event_ms``)."""
        user = self._users.get(user_id)
        return dict(user.counters) if user is not None else {}


def _newest(history: list[str], n: int) -> list[str]:
    """The newest ``n`` items, oldest first; ``history[-0:]`` would be all of them."""
    return history[-n:] if n > 0 else []


class MemoryTrendingStore:
    """TrendingStore in a dict; ``clock`` (seconds) times the decay lock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._scores: dict[str, float] = {}
        self._lock_until = -math.inf

    async def record(self, items: Sequence[tuple[str, int]]) -> None:
        """items: (item_id, event type code) pairs of newly applied events."""
        for item_id, type_code in items:
            self._scores[item_id] = self._scores.get(item_id, 0.0) + EVENT_WEIGHTS.get(type_code, 1.0)

    async def top(self, n: int) -> list[tuple[str, float]]:
        """Highest scores first; ties in reverse id order (as ZREVRANGE)."""
        if n <= 0:
            return []
        return heapq.nlargest(n, self._scores.items(), key=lambda row: (row[1], row[0]))

    async def decay(self, interval_s: float, half_life_s: float) -> bool:
        """Decay all scores at most once per 0.9 × interval (the Redis lock's lifetime)."""
        now = self._clock()
        if now < self._lock_until:
            return False
        self._lock_until = now + max(1, int(interval_s * 1000 * 0.9)) / 1000
        factor = math.exp(-interval_s / half_life_s * math.log(2))
        self._scores = {item: score * factor for item, score in self._scores.items() if score * factor > _MIN_SCORE}
        return True


class MemoryCatalogStore:
    """CatalogStore in a dict. Items are kept serialized, so a snapshot never shares
    messages with the caller of ``upsert`` or with another snapshot."""

    def __init__(self) -> None:
        self._items: dict[str, bytes] = {}
        self._version = 0

    async def upsert(self, items: Sequence[catalog_pb2.CatalogItem]) -> None:
        if not items:
            return
        self._items.update({it.item_id: it.SerializeToString() for it in items})
        self._version += 1

    async def version(self) -> int:
        return self._version

    async def snapshot(self) -> CatalogSnapshot:
        items = {k: catalog_pb2.CatalogItem.FromString(v) for k, v in self._items.items()}
        return CatalogSnapshot(version=self._version, items=items)
