"""Per-user state: recent history, purchases, counters, and the user embedding.

Writes happen in the features service through one Lua script call per user per
batch, which checks each event id against the user's dedup window and applies
that user's events in one atomic step, so redelivery or a crash mid-batch never
double-counts. The same call can hand back the user's new history, so the
embedding refresh needs no second read.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, Sequence

import numpy as np

from services.common.stores import keys
from services.common.stores.scripts import evalsha_all

# Numeric codes stored in Redis for each event type (matches the proto enum).
EVENT_TYPE_NAMES = {1: "view", 2: "click", 3: "add_to_cart", 4: "purchase"}
PURCHASE = 4

_FORGET_USER = """
-- KEYS: the user's keys to delete, then its tombstone last (one user, one hash slot); ARGV: now_ms
-- Deletes the user's state and leaves the tombstone the apply script honours.
local deleted = redis.call('DEL', unpack(KEYS, 1, #KEYS - 1))
redis.call('SET', KEYS[#KEYS], ARGV[1])
return deleted
"""

# One call per user per batch: the per-event work stays inside Redis, and the
# pipeline carries one command per user instead of one per event.
_APPLY_USER_EVENTS = """
-- KEYS: hist, purchased, counts, dedup, forgotten (one user, one hash slot)
-- ARGV: history_cap, dedup_cap, now_ms, return_len, events: the user's events in order as ONE
--       compact string, per event "event_id US item_id US type_code US occurred_ms RS"
--       with US = byte 255 and RS = byte 254: bytes that never occur in UTF-8, so no id can
--       contain them and nothing needs escaping. One argument, no JSON: the client only joins
--       strings, and a pipeline entry has 9 arguments per user whatever its number of events.
-- Returns one bulk string "flags RS hist_version RS history": flags one character per event
-- ('1' new, '0' redelivery or from before a ForgetUser), history newest first (return_len items) joined by US. One flat
-- string is what the client splits fastest (no per-element reply parsing, no JSON).
local history_cap = tonumber(ARGV[1])
local dedup_cap = tonumber(ARGV[2])
local now = ARGV[3]
local return_len = tonumber(ARGV[4])
local names = {['1'] = 'view', ['2'] = 'click', ['3'] = 'add_to_cart', ['4'] = 'purchase'}
local flags = {}
local pushed = 0
local last = tonumber(redis.call('HGET', KEYS[3], 'last_event_ms') or '0')
local newest, newest_raw = last, nil
local n = redis.call('ZCARD', KEYS[4])
local forgotten = tonumber(redis.call('GET', KEYS[5]) or '-1')
for eid, item, code, occurred_raw in string.gmatch(ARGV[5], '([^\\255]*)\\255([^\\255]*)\\255([^\\255]*)\\255([^\\254]*)\\254') do
  if tonumber(occurred_raw) <= forgotten or redis.call('ZSCORE', KEYS[4], eid) then
    flags[#flags + 1] = '0'
  else
    redis.call('ZADD', KEYS[4], now, eid)
    n = n + 1
    if n > dedup_cap then
      redis.call('ZREMRANGEBYRANK', KEYS[4], 0, n - dedup_cap - 1)
      n = dedup_cap
    end
    redis.call('LPUSH', KEYS[1], item)
    if code == '4' then
      redis.call('SADD', KEYS[2], item)
    end
    redis.call('HINCRBY', KEYS[3], names[code] or code, 1)
    local occurred = tonumber(occurred_raw)
    if occurred > newest then
      newest, newest_raw = occurred, occurred_raw
    end
    pushed = pushed + 1
    flags[#flags + 1] = '1'
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
local history = ''
if return_len > 0 then
  history = table.concat(redis.call('LRANGE', KEYS[1], 0, return_len - 1), '\\255')
end
return table.concat(flags) .. '\\254' .. hist_version .. '\\254' .. history
"""
_READ_USER_STATE = """
-- KEYS: hist, purchased, counts, embedding (one user, one hash slot); ARGV: history_len
-- (>= 1; the client reads no list for 0), with_embedding ('1' / '0'). Read only. Returns {text, vec}: text is
-- "history RS purchased RS hist_version RS embedding model RS embedding hist_version", lists
-- joined by US (the separators of _APPLY_USER_EVENTS), history newest first; vec is the
-- embedding's raw bytes or nil. One script call instead of four commands: the client packs
-- one command and splits one string per user.
local history = table.concat(redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1), '\\255')
local purchased = table.concat(redis.call('SMEMBERS', KEYS[2]), '\\255')
local hist_version = redis.call('HGET', KEYS[3], 'hist_version') or '0'
local vec, model, emb_version = false, '', '-1'
if ARGV[2] == '1' then
  local emb = redis.call('HMGET', KEYS[4], 'vec', 'model', 'hist_version')
  vec, model, emb_version = emb[1], emb[2] or '', emb[3] or '-1'
end
return {history .. '\\254' .. purchased .. '\\254' .. hist_version .. '\\254' .. model .. '\\254' .. emb_version, vec}
"""
# The separators as str: lone surrogates that the "surrogateescape" codec turns into the
# bytes 0xFF and 0xFE (and back), so packing and splitting stay single C-level calls.
_US, _RS = "\udcff", "\udcfe"


class EventWrite(NamedTuple):
    """One event to apply (a tuple: the worker builds one per event, so it must be cheap)."""

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

    async def apply_events_with_states(self, events: Sequence[EventWrite], history_len: int) -> AppliedEvents:
        """Dedup is per user (the newest ``dedup_cap`` ids of that user); ``history_len`` is
        the newest items each returned state holds, oldest first, none for 0."""

    async def get_states(self, user_ids: Sequence[str], history_len: int, *,
                         with_embedding: bool = True) -> list[UserState]:
        """States in the order asked; ``history_len`` as for ``apply_events_with_states``."""

    async def put_embeddings(self, writes: Sequence[EmbeddingWrite]) -> None: ...

    async def forget(self, user_id: str, now_ms: int) -> int:
        """Delete the user's state; events that occurred before ``now_ms`` never apply again."""


class RedisUserStateStore:
    """UserStateStore on Redis / Redis Cluster; one pipelined round trip per call."""

    def __init__(self, redis, history_cap: int = 200, dedup_cap: int = 5000) -> None:
        self._redis = redis
        self._history_cap = history_cap
        self._dedup_cap = dedup_cap
        # Called with EVALSHA directly: redis-py's Script in a pipeline first sends
        # SCRIPT EXISTS, one more round trip per batch. A NOSCRIPT reply (Redis
        # restarted or flushed) loads the script and re-runs just those calls.
        self._apply_sha = redis.register_script(_APPLY_USER_EVENTS).sha
        self._read_sha = redis.register_script(_READ_USER_STATE).sha
        self._forget_sha = redis.register_script(_FORGET_USER).sha
        self._history_cap_b = str(history_cap).encode()
        self._dedup_cap_b = str(dedup_cap).encode()

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
        packed: dict[str, list[str]] = {}
        for i, (event_id, user_id, item_id, type_code, occurred_ms) in enumerate(events):
            row = f"{event_id}{_US}{item_id}{_US}{type_code}{_US}{occurred_ms}"
            positions = by_user.get(user_id)
            if positions is None:
                by_user[user_id] = [i]
                packed[user_id] = [row]
            else:
                positions.append(i)
                packed[user_id].append(row)
        head = (self._history_cap_b, self._dedup_cap_b, int(time.time() * 1000), max(0, history_len))
        calls = [
            (self._apply_sha, 5, keys.history(uid), keys.purchased(uid), keys.counters(uid), keys.dedup(uid),
             keys.forgotten(uid), *head, (_RS.join(rows) + _RS).encode("utf-8", "surrogateescape"))
            for uid, rows in packed.items()
        ]
        replies = await evalsha_all(self._redis, [_APPLY_USER_EVENTS], calls)
        new = [False] * len(events)
        states: dict[str, UserState] = {}
        for (uid, positions), reply in zip(by_user.items(), replies):
            flags, hist_version, history = reply.decode("utf-8", "surrogateescape").split(_RS)
            for i, flag in zip(positions, flags):
                new[i] = flag == "1"
            items = history.split(_US) if history else []
            items.reverse()
            states[uid] = UserState(user_id=uid, history=items, hist_version=int(hist_version))
        return AppliedEvents(new, states)

    async def get_states(self, user_ids: Sequence[str], history_len: int, *,
                         with_embedding: bool = True) -> list[UserState]:
        """One pipelined round trip. ``with_embedding=False`` leaves out the embedding hash,
        for callers that need only history and purchases (the gateway's exclusions)."""
        flag = b"1" if with_embedding else b"0"
        # LRANGE 0 -1 would read the whole list: for 0 read one item and drop it.
        length = str(max(1, history_len)).encode()
        calls = [(self._read_sha, 4, keys.history(uid), keys.purchased(uid), keys.counters(uid), keys.embedding(uid),
                  length, flag) for uid in user_ids]
        replies = await evalsha_all(self._redis, [_READ_USER_STATE], calls) if calls else []
        states = []
        for uid, (text, vec) in zip(user_ids, replies):
            history, bought, hist_version, model, emb_version = text.decode("utf-8", "surrogateescape").split(_RS)
            items = history.split(_US) if history and history_len > 0 else []
            items.reverse()
            state = UserState(user_id=uid, history=items, purchased=set(bought.split(_US)) if bought else set(),
                              hist_version=int(hist_version))
            if vec is not None:
                state.embedding = np.frombuffer(vec, dtype=np.float32)
                state.embedding_model = model
                state.embedding_hist_version = int(emb_version)
            states.append(state)
        return states

    async def forget(self, user_id: str, now_ms: int) -> int:
        """Delete the user's state and leave a tombstone at ``now_ms``: events that occurred
        before it are never applied again (redeliveries, replays). Returns the keys deleted."""
        await self._redis.zadd(keys.FORGOTTEN_USERS, {user_id: now_ms})  # first: exports see it even if we fail next
        doomed = [keys.history(user_id), keys.purchased(user_id), keys.counters(user_id), keys.dedup(user_id),
                  keys.embedding(user_id), *(keys.attribution(user_id, s) for s in keys.ATTRIBUTION_PERSONAL)]
        (deleted,) = await evalsha_all(self._redis, [_FORGET_USER], [(
            self._forget_sha, len(doomed) + 1, *doomed, keys.forgotten(user_id), now_ms)])
        return int(deleted)

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


async def read_forgotten(redis) -> dict[str, int]:
    """Every user forgotten with ForgetUser -> when (ms): exports and retraining leave out
    their events that occurred before it."""
    rows = await redis.zrange(keys.FORGOTTEN_USERS, 0, -1, withscores=True)
    return {user.decode("utf-8", "surrogateescape"): int(ms) for user, ms in rows}
