"""Per-user state: recent history, purchases, counters, and the user embedding.

Writes happen in the features service through one Lua script per event, which
checks the event id against the user's dedup window and applies everything in
one atomic step, so redelivery or a crash mid-batch never double-counts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from services.common.stores import keys

# Numeric codes stored in Redis for each event type (matches the proto enum).
EVENT_TYPE_NAMES = {1: "view", 2: "click", 3: "add_to_cart", 4: "purchase"}
PURCHASE = 4

_APPLY_EVENT = """
-- KEYS: hist, purchased, counts, dedup
-- ARGV: event_id, item_id, type_code, type_name, occurred_ms, history_cap, dedup_cap, now_ms
if redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[1])
local dedup_cap = tonumber(ARGV[7])
local n = redis.call('ZCARD', KEYS[4])
if n > dedup_cap then
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, n - dedup_cap - 1)
end
redis.call('LPUSH', KEYS[1], ARGV[2])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[6]) - 1)
if ARGV[3] == '4' then
  redis.call('SADD', KEYS[2], ARGV[2])
end
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
redis.call('HINCRBY', KEYS[3], 'events', 1)
redis.call('HINCRBY', KEYS[3], 'hist_version', 1)
local last = tonumber(redis.call('HGET', KEYS[3], 'last_event_ms') or '0')
if tonumber(ARGV[5]) > last then
  redis.call('HSET', KEYS[3], 'last_event_ms', ARGV[5])
end
return 1
"""


@dataclass(frozen=True)
class EventWrite:
    event_id: str
    user_id: str
    item_id: str
    type_code: int
    occurred_ms: int


@dataclass
class UserState:
    user_id: str
    history: list[str] = field(default_factory=list)  # oldest first
    purchased: set[str] = field(default_factory=set)
    hist_version: int = 0
    embedding: np.ndarray | None = None
    embedding_model: str = ""
    embedding_hist_version: int = -1

    @property
    def known(self) -> bool:
        return bool(self.history)

    def embedding_for(self, model_version: str) -> np.ndarray | None:
        """The stored embedding if it was computed by this model from the current history."""
        if (
            self.embedding is not None
            and self.embedding_model == model_version
            and self.embedding_hist_version == self.hist_version
        ):
            return self.embedding
        return None


@dataclass(frozen=True)
class EmbeddingWrite:
    user_id: str
    model_version: str
    hist_version: int
    vector: np.ndarray


class UserStateStore(Protocol):
    async def apply_events(self, events: Sequence[EventWrite]) -> list[bool]: ...

    async def get_states(self, user_ids: Sequence[str], history_len: int) -> list[UserState]: ...

    async def put_embeddings(self, writes: Sequence[EmbeddingWrite]) -> None: ...


class RedisUserStateStore:
    """UserStateStore on Redis / Redis Cluster; one pipelined round trip per call."""

    def __init__(self, redis, history_cap: int = 200, dedup_cap: int = 5000) -> None:
        self._redis = redis
        self._history_cap = history_cap
        self._dedup_cap = dedup_cap
        self._apply = redis.register_script(_APPLY_EVENT)

    async def apply_events(self, events: Sequence[EventWrite]) -> list[bool]:
        """Apply events in order; returns, per event, whether it was new (not a redelivery)."""
        if not events:
            return []
        now_ms = int(time.time() * 1000)
        pipe = self._redis.pipeline(transaction=False)
        for ev in events:
            await self._apply(
                keys=[keys.history(ev.user_id), keys.purchased(ev.user_id), keys.counters(ev.user_id), keys.dedup(ev.user_id)],
                args=[ev.event_id, ev.item_id, ev.type_code, EVENT_TYPE_NAMES[ev.type_code], ev.occurred_ms,
                      self._history_cap, self._dedup_cap, now_ms],
                client=pipe,
            )
        results = await pipe.execute()
        return [bool(r) for r in results]

    async def get_states(self, user_ids: Sequence[str], history_len: int) -> list[UserState]:
        pipe = self._redis.pipeline(transaction=False)
        for uid in user_ids:
            pipe.lrange(keys.history(uid), 0, history_len - 1)
            pipe.smembers(keys.purchased(uid))
            pipe.hget(keys.counters(uid), "hist_version")
            pipe.hgetall(keys.embedding(uid))
        raw = await pipe.execute()
        states = []
        for i, uid in enumerate(user_ids):
            hist, bought, hv, emb = raw[4 * i: 4 * i + 4]
            state = UserState(
                user_id=uid,
                history=[h.decode() for h in reversed(hist)],
                purchased={p.decode() for p in bought},
                hist_version=int(hv or 0),
            )
            if emb and b"vec" in emb:
                state.embedding = np.frombuffer(emb[b"vec"], dtype=np.float32)
                state.embedding_model = emb.get(b"model", b"").decode()
                state.embedding_hist_version = int(emb.get(b"hist_version", b"-1"))
            states.append(state)
        return states

    async def put_embeddings(self, writes: Sequence[EmbeddingWrite]) -> None:
        if not writes:
            return
        now_ms = int(time.time() * 1000)
        pipe = self._redis.pipeline(transaction=False)
        for w in writes:
            pipe.hset(keys.embedding(w.user_id), mapping={
                "model": w.model_version,
                "hist_version": w.hist_version,
                "vec": np.ascontiguousarray(w.vector, dtype=np.float32).tobytes(),
                "updated_ms": now_ms,
            })
        await pipe.execute()
