"""Per-user state: recent history, purchases, counters, and the user embedding.

Writes happen in the features service through one Lua script call per user per
batch, which checks each event id against the user's dedup window and applies
that user's events in one atomic step, so redelivery or a crash mid-batch never
double-counts. The same call can hand back the user's new history, so the
embedding refresh needs no second read.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from services.common.stores import keys

# Numeric codes stored in Redis for each event type (matches the proto enum).
EVENT_TYPE_NAMES = {1: "view", 2: "click", 3: "add_to_cart", 4: "purchase"}
PURCHASE = 4

# One call per user per batch: the per-event work stays inside Redis, and the
# pipeline carries one command per user instead of one per event.
_APPLY_USER_EVENTS = """
-- KEYS: hist, purchased, counts, dedup (one user, one hash slot)
-- ARGV: history_cap, dedup_cap, now_ms, return_len, events: JSON [[event_id, item_id, type_code,
--       type_name, occurred_ms], ...] as strings (one argument: packing 5 per event dominates the client)
-- Returns JSON [flags (1 new, 0 redelivery, per event), hist_version, newest-first history (return_len items)]:
-- one bulk string, because parsing nested multi-bulk replies item by item is what
-- costs the client most (redis-py's pure-Python parser), not the bytes.
local history_cap = tonumber(ARGV[1])
local dedup_cap = tonumber(ARGV[2])
local now = ARGV[3]
local return_len = tonumber(ARGV[4])
local flags = {}
local pushed = 0
local last = tonumber(redis.call('HGET', KEYS[3], 'last_event_ms') or '0')
local newest, newest_raw = last, nil
local n = redis.call('ZCARD', KEYS[4])
for _, ev in ipairs(cjson.decode(ARGV[5])) do
  if redis.call('ZSCORE', KEYS[4], ev[1]) then
    flags[#flags + 1] = 0
  else
    redis.call('ZADD', KEYS[4], now, ev[1])
    n = n + 1
    if n > dedup_cap then
      redis.call('ZREMRANGEBYRANK', KEYS[4], 0, n - dedup_cap - 1)
      n = dedup_cap
    end
    redis.call('LPUSH', KEYS[1], ev[2])
    if ev[3] == '4' then
      redis.call('SADD', KEYS[2], ev[2])
    end
    redis.call('HINCRBY', KEYS[3], ev[4], 1)
    local occurred = tonumber(ev[5])
    if occurred > newest then
      newest, newest_raw = occurred, ev[5]
    end
    pushed = pushed + 1
    flags[#flags + 1] = 1
  end
end
local hist_version
if pushed > 0 then
  redis.call('LTRIM', KEYS[1], 0, history_cap - 1)
  redis.call('HINCRBY', KEYS[3], 'events', pushed)
  hist_version = redis.call('HINCRBY', KEYS[3], 'hist_version', pushed)
  if newest_raw then
    redis.call('HSET', KEYS[3], 'last_event_ms', newest_raw)
  end
else
  hist_version = tonumber(redis.call('HGET', KEYS[3], 'hist_version') or '0')
end
local history = {}
if return_len > 0 then
  history = redis.call('LRANGE', KEYS[1], 0, return_len - 1)
end
return cjson.encode({flags, hist_version, history})
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


@dataclass
class AppliedEvents:
    """What ``apply_events_with_states`` did: per event whether it was new, and for every
    user in the batch the state right after it (history oldest first, ``hist_version``)."""

    new: list[bool]
    states: dict[str, UserState]


class UserStateStore(Protocol):
    async def apply_events(self, events: Sequence[EventWrite]) -> list[bool]: ...

    async def apply_events_with_states(self, events: Sequence[EventWrite], history_len: int) -> AppliedEvents: ...

    async def get_states(self, user_ids: Sequence[str], history_len: int, *,
                         with_embedding: bool = True) -> list[UserState]: ...

    async def put_embeddings(self, writes: Sequence[EmbeddingWrite]) -> None: ...


class RedisUserStateStore:
    """UserStateStore on Redis / Redis Cluster; one pipelined round trip per call."""

    def __init__(self, redis, history_cap: int = 200, dedup_cap: int = 5000) -> None:
        self._redis = redis
        self._history_cap = history_cap
        self._dedup_cap = dedup_cap
        self._apply = redis.register_script(_APPLY_USER_EVENTS)

    async def apply_events(self, events: Sequence[EventWrite]) -> list[bool]:
        """Apply events in order; returns, per event, whether it was new (not a redelivery)."""
        return (await self.apply_events_with_states(events, 0)).new

    async def apply_events_with_states(self, events: Sequence[EventWrite], history_len: int) -> AppliedEvents:
        """Apply events (in order per user): one script call per user, all in one pipeline.

        With ``history_len`` > 0 each user's newest ``history_len`` items come back
        too, read inside the same script, so they match the returned ``hist_version``.
        """
        if not events:
            return AppliedEvents([], {})
        by_user: dict[str, list[int]] = {}
        for i, ev in enumerate(events):
            by_user.setdefault(ev.user_id, []).append(i)
        head = (self._history_cap, self._dedup_cap, int(time.time() * 1000), max(0, history_len))
        pipe = self._redis.pipeline(transaction=False)
        for uid, positions in by_user.items():
            packed = json.dumps([
                (ev.event_id, ev.item_id, str(ev.type_code), EVENT_TYPE_NAMES[ev.type_code], str(ev.occurred_ms))
                for ev in (events[i] for i in positions)])
            await self._apply(keys=[keys.history(uid), keys.purchased(uid), keys.counters(uid), keys.dedup(uid)],
                              args=[*head, packed], client=pipe)
        replies = await pipe.execute()
        new = [False] * len(events)
        states: dict[str, UserState] = {}
        for (uid, positions), reply in zip(by_user.items(), replies):
            flags, hist_version, history = json.loads(reply)
            history = history or []  # cjson encodes an empty table as {}
            for i, flag in zip(positions, flags):
                new[i] = bool(flag)
            states[uid] = UserState(user_id=uid, history=history[::-1],
                                    hist_version=int(hist_version))
        return AppliedEvents(new, states)

    async def get_states(self, user_ids: Sequence[str], history_len: int, *,
                         with_embedding: bool = True) -> list[UserState]:
        """One pipelined round trip. ``with_embedding=False`` leaves out the embedding hash,
        for callers that need only history and purchases (the gateway's exclusions)."""
        pipe = self._redis.pipeline(transaction=False)
        for uid in user_ids:
            pipe.lrange(keys.history(uid), 0, history_len - 1)
            pipe.smembers(keys.purchased(uid))
            pipe.hget(keys.counters(uid), "hist_version")
            if with_embedding:
                pipe.hgetall(keys.embedding(uid))
        raw = await pipe.execute()
        per_user = 4 if with_embedding else 3
        states = []
        for i, uid in enumerate(user_ids):
            hist, bought, hv = raw[per_user * i: per_user * i + 3]
            emb = raw[per_user * i + 3] if with_embedding else None
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
