"""Attribution state in Redis: the per-user join of events with served lists, and the
per experiment / variant / time-bucket aggregates the report reads.

The written spec is docs/redis-keys.md ("Attribution"); keep both in step.

Exactly once. A record changes the user's join state (slot ``{u:<user>}``) and the
aggregates (slot ``{attr}``). On a single Redis one script call (``_JOIN_AND_COUNT``) per
chunk of whole users does both atomically: dedup, join and count, so a redelivered record is
a duplicate and counts nothing. No script may touch two slots on a Redis Cluster, so there a
batch is written in three steps:

1. one script call per user (``_JOIN_USER``): dedup each record by its id, join it,
   and put the aggregate increments it causes into the user's **outbox** as one entry
   with the user's next sequence number, all atomically. It returns every entry still
   in the outbox, including ones left by an earlier attempt that died before step 3;
2. one script call (``_APPLY_AGGREGATES``) applies the entries: an entry applies only
   if its sequence number is above the user's watermark ``applied[user]``, which the
   same call raises. So an entry applies exactly once, however often it is sent;
3. the applied entries are removed from the outboxes.

A crash after 1 leaves the entry in the outbox; the record is redelivered (it was not
acked), is a duplicate in step 1, and step 1 hands back the pending entry, which step 2
applies. A crash after 2 leaves an applied entry in the outbox; step 2 skips it next
time (watermark) and step 3 removes it.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

from redis.asyncio.cluster import RedisCluster

from services.common.stores import keys
from services.common.stores.keys import PREFIX
from services.common.stores.scripts import evalsha_all

NO_EXPERIMENT = "-"  # the experiment name of lists served outside any experiment
POSITION_BUCKETS = 20  # click positions 0..19 counted one by one, 20 and beyond together
CLOCK_SKEW_MS = 1000  # a list served up to this much "after" an event still counts (clocks differ)

# The counters of one (experiment, variant, bucket) hash.
COUNTERS = ("impressions", "degraded", "views", "clicks", "add_to_carts", "purchases",
            "clicked_lists", "carted_lists", "purchased_lists", "revenue_micros",
            "click_position_sum", "click_position_count")
FLOAT_FIELDS = frozenset({"revenue_sq"})  # sum over lists of (revenue of the list)^2, currency units^2
SEP = "\x1f"  # between experiment, variant and bucket in the script's keys (never in a name we accept)
TYPE_NAMES = {1: "view", 2: "click", 3: "add_to_cart", 4: "purchase"}

# Reasons an event is not attributed (the label of shopstream_attribution_unattributed_total).
UNKNOWN_RECOMMENDATION = "unknown_recommendation"  # no list with that id seen (yet)
EXPIRED_RECOMMENDATION = "expired_recommendation"  # seen, but no longer kept for this user
NO_LIST_IN_WINDOW = "no_list_in_window"  # no recommendation_id, no recent list had the item
REASONS = (UNKNOWN_RECOMMENDATION, EXPIRED_RECOMMENDATION, NO_LIST_IN_WINDOW)


# ---- keys ---------------------------------------------------------------------------------

def _user(user_id: str, suffix: str) -> bytes:
    return keys.attribution(user_id, suffix)


USER_KEY_NAMES = ("lists", "recent", "seen", "pending", "outbox", "seq")  # _JOIN_AND_COUNT names them too


def user_keys(user_id: str) -> list[bytes]:
    """The user's join state, one slot: lists, lists by time, seen ids, pending events,
    outbox, sequence."""
    return [_user(user_id, s) for s in USER_KEY_NAMES]


# What comes before and after the user id in the user's keys (for _JOIN_AND_COUNT, which
# builds them): <before><user id><after><name>.
USER_KEY_BEFORE, USER_KEY_AFTER = _user("\0", "").split(b"\0")
# The user's ForgetUser tombstone, in the same slot: <before><user id><TOMBSTONE_AFTER>.
TOMBSTONE_AFTER = keys.forgotten("\0").split(b"\0")[1]


# The aggregates' keys, all in slot {attr}. _JOIN_AND_COUNT builds the same names from AGG.
AGG = f"{PREFIX}:{{attr}}"
AGG_APPLIED = f"{AGG}:applied".encode()  # hash user -> last applied outbox seq
AGG_EXPERIMENTS = f"{AGG}:experiments".encode()  # set of experiment names
AGG_UNATTRIBUTED = f"{AGG}:unattributed".encode()  # hash "<reason>:<type>" -> n


def variants_key(experiment: str) -> bytes:
    return f"{AGG}:x:{experiment}:variants".encode()


def buckets_key(experiment: str) -> bytes:
    return f"{AGG}:x:{experiment}:buckets".encode()


def bucket_key(experiment: str, variant: str, bucket_ms: int) -> bytes:
    return f"{AGG}:x:{experiment}:v:{variant}:b:{bucket_ms}".encode()


def users_key(experiment: str, variant: str) -> bytes:
    return f"{AGG}:x:{experiment}:v:{variant}:users".encode()


def bucket_start(ms: int, bucket_ms: int) -> int:
    """The start of the time bucket holding ``ms`` (epoch milliseconds; floor, also below 0)."""
    return ms - ms % bucket_ms


# ---- the scripts --------------------------------------------------------------------------

# The join, shared by both ways of writing a batch (below): ``join(K, records)`` dedups, joins
# and counts one user's records, K being that user's keys (lists, recent, seen, pending,
# outbox, seq), and accumulates the aggregate increments in ``inc`` / ``un`` and the
# experiment/variant pairs the user was served in ``users``.
_JOIN = """
local window, bucket_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_lists, dedup_cap, max_pending = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local skew = tonumber(ARGV[6])
local inc, users, un = {}, {}, {}
local changed = false
local K

local function add(key, field, n)
  local t = inc[key]
  if not t then t = {}; inc[key] = t end
  t[field] = (t[field] or 0) + n
  changed = true
end
local function unattributed(reason, ev, sign)
  local names = {'view', 'click', 'add_to_cart', 'purchase'}
  local k = reason .. ':' .. (names[ev.ty] or tostring(ev.ty))
  un[k] = (un[k] or 0) + sign
  if ev.ty == 4 and ev.val > 0 then
    un[reason .. ':revenue_micros'] = (un[reason .. ':revenue_micros'] or 0) + sign * ev.val
  end
  changed = true
end
-- Records a record id as seen; its arrival number when it is new, nil when it was seen before
-- (ZADD NX checks and records in one call). Trims now and then: the cap is a floor, not exact.
local function first_time(id)
  local n = redis.call('INCR', K[6])
  if redis.call('ZADD', K[3], 'NX', n, id) == 0 then return nil end
  if n % 64 == 0 then
    redis.call('ZREMRANGEBYRANK', K[3], 0, -dedup_cap - 1)
  end
  return n
end
local function key_of(list)
  local b = list.t - (list.t % bucket_ms)
  return list.x .. '\\31' .. list.v .. '\\31' .. string.format('%d', b)
end
-- One event joined with one list: counters of the list's bucket (a list's clicks count in
-- the bucket it was served in, so CTR per bucket is clicks on that bucket's lists).
local function attribute(rid, list, ev)
  local key = key_of(list)
  if ev.ty == 1 then
    add(key, 'views', 1)
  elseif ev.ty == 2 then
    add(key, 'clicks', 1)
    if list.f % 2 == 0 then list.f = list.f + 1; add(key, 'clicked_lists', 1) end
    local pos = ev.p
    if pos < 0 then
      for i, item in ipairs(list.i) do
        if item == ev.it then pos = i - 1; break end
      end
    end
    if pos >= 0 then
      add(key, 'click_position_sum', pos)
      add(key, 'click_position_count', 1)
      add(key, 'pos:' .. (pos < 20 and tostring(pos) or '20+'), 1)
    end
  elseif ev.ty == 3 then
    add(key, 'add_to_carts', 1)
    if math.floor(list.f / 2) % 2 == 0 then list.f = list.f + 2; add(key, 'carted_lists', 1) end
  elseif ev.ty == 4 then
    add(key, 'purchases', 1)
    if math.floor(list.f / 4) % 2 == 0 then list.f = list.f + 4; add(key, 'purchased_lists', 1) end
    if ev.val > 0 then
      add(key, 'revenue_micros', ev.val)
      -- sum over lists of (revenue of the list)^2, in currency units^2, for the variance
      local before = list.rv / 1e6
      local after = (list.rv + ev.val) / 1e6
      add(key, 'revenue_sq', after * after - before * before)
      list.rv = list.rv + ev.val
    end
  end
  redis.call('HSET', K[1], rid, cjson.encode(list))
end

-- One user's records (in order) against the user's keys ``keys`` (user_keys, then the user's
-- ForgetUser tombstone); returns one char per record, '1' new, '0' duplicate or forgotten.
local function join(keys, records)
  K = keys
  -- ForgetUser's tombstone (ms): records of the user from before it are never applied again
  -- (a redelivery or a replay), as the features worker's events (docs/privacy.md)
  local forgotten = tonumber(redis.call('GET', K[7]) or '-1')
  local flags = {}
  for _, r in ipairs(records) do
    if r.t <= forgotten then
      flags[#flags + 1] = '0'
    elseif r.k == 'i' then
      local n = first_time('i:' .. r.r)
      if not n then
        flags[#flags + 1] = '0'
      else
        flags[#flags + 1] = '1'
        local list = {x = r.x, v = r.v, t = r.t, i = r.i, f = 0, rv = 0}
        redis.call('HSET', K[1], r.r, cjson.encode(list))
        redis.call('ZADD', K[2], r.t, r.r)
        if n % 16 == 0 then  -- the oldest lists beyond max_lists go, now and then
          local extra = redis.call('ZCARD', K[2]) - max_lists
          if extra > 0 then
            for _, old in ipairs(redis.call('ZRANGE', K[2], 0, extra - 1)) do
              redis.call('HDEL', K[1], old)
            end
            redis.call('ZREMRANGEBYRANK', K[2], 0, extra - 1)
          end
        end
        local key = key_of(list)
        add(key, 'impressions', 1)
        if r.d == 1 then add(key, 'degraded', 1) end
        users[r.x .. '\\31' .. r.v] = true
        -- events that named this list before it arrived: move them from unattributed to it
        for _, raw in ipairs(redis.call('ZRANGE', K[4], 0, -1)) do
          local ev = cjson.decode(raw)
          if ev.r == r.r then
            redis.call('ZREM', K[4], raw)
            unattributed('unknown_recommendation', ev, -1)
            attribute(r.r, list, ev)
          end
        end
      end
    else
      if not first_time('e:' .. r.id) then
        flags[#flags + 1] = '0'
      else
        flags[#flags + 1] = '1'
        if r.r ~= '' then
          local raw = redis.call('HGET', K[1], r.r)
          if raw then
            attribute(r.r, cjson.decode(raw), r)
          elseif redis.call('ZSCORE', K[3], 'i:' .. r.r) then
            unattributed('expired_recommendation', r, 1)
          else
            unattributed('unknown_recommendation', r, 1)
            redis.call('ZADD', K[4], r.t, cjson.encode(r))
            local extra = redis.call('ZCARD', K[4]) - max_pending
            if extra > 0 then redis.call('ZREMRANGEBYRANK', K[4], 0, extra - 1) end
          end
        else
          -- the most recent list served within the window before the event that had the item
          local found = false
          for _, rid in ipairs(redis.call('ZREVRANGEBYSCORE', K[2], r.t + skew, r.t - window)) do
            local list = cjson.decode(redis.call('HGET', K[1], rid))
            for _, item in ipairs(list.i) do
              if item == r.it then found = true; break end
            end
            if found then attribute(rid, list, r); break end
          end
          if not found then unattributed('no_list_in_window', r, 1) end
        end
      end
    end
  end
  return table.concat(flags)
end
"""

_JOIN_USER = _JOIN + """
-- One user, the outbox way (works on Redis Cluster: touches only the user's slot).
-- KEYS: the user's lists, recent, seen, pending, outbox, seq, ForgetUser tombstone
-- ARGV: window_ms, bucket_ms, max_lists, dedup_cap, max_pending, skew_ms, user_id, records (JSON array)
-- Returns {flags, entry, entry, ...}: flags one char per record ('1' new, '0' duplicate),
-- then every entry in the outbox (oldest first), the one this call added included.
local user = ARGV[7]
local flags = join({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}, cjson.decode(ARGV[8]))
if changed then
  -- The counter as the records of this call left it (each took a number, a new one among them):
  -- above every earlier entry's, and not a number of its own, so arrivals count records only.
  local seq = tonumber(redis.call('GET', KEYS[6]))
  local u = {}
  for k in pairs(users) do u[#u + 1] = k end
  -- lists, not objects, so an empty one still decodes as a list in Python
  local rows = {}
  for key, fields in pairs(inc) do
    for f, n in pairs(fields) do rows[#rows + 1] = {key, f, n} end
  end
  local unrows = {}
  for k, n in pairs(un) do unrows[#unrows + 1] = {k, n} end
  redis.call('ZADD', KEYS[5], seq, cjson.encode({s = seq, inc = rows, users = u, un = unrows, user = user}))
end
local out = {flags}
for _, e in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do out[#out + 1] = e end
return out
"""

# Every user of a chunk of a batch and the aggregates together, in one atomic call: on a single
# Redis only (the call touches many users' slots and the aggregates' slot, and names the keys
# itself: the aggregates' depend on the list an event joins, which only the script reads, and
# the users' are built from their ids, which saves packing and parsing six keys per user), so
# the script says no-cluster. A record's join and its counts are written together, so no
# outbox is needed: a redelivered record is a duplicate and counts nothing.
_JOIN_AND_COUNT = "#!lua flags=no-cluster\n" + _JOIN + """
-- ARGV[1..6]: as _JOIN_USER's; ARGV[7]: the aggregates' key prefix ("<PREFIX>:{attr}");
-- ARGV[8]: JSON [[user_id, records], ...]; ARGV[9], ARGV[10]: what comes before and after the
-- user id in the user's keys (user_keys: <before><user><after><name>); ARGV[11]: what comes
-- after it in the user's ForgetUser tombstone (<before><user><ARGV[11]>)
-- Returns {flags of user 1, ..., flags of user n, JSON {inc = rows, un = rows} of what was
-- counted, then outbox entries an outbox-way write left (for the caller to apply)}.
local prefix = ARGV[7]
local batch = cjson.decode(ARGV[8])
local before, after, tombstone = ARGV[9], ARGV[10], ARGV[11]
local out, left = {}, {}
for n, entry in ipairs(batch) do
  local base = before .. entry[1] .. after
  local keys = {base .. 'lists', base .. 'recent', base .. 'seen', base .. 'pending', base .. 'outbox',
                base .. 'seq', before .. entry[1] .. tombstone}
  users = {}
  out[n] = join(keys, entry[2])
  for pair in pairs(users) do
    local x, v = pair:match('^(.-)\\31(.*)$')
    redis.call('PFADD', prefix .. ':x:' .. x .. ':v:' .. v .. ':users', entry[1])
  end
  for _, e in ipairs(redis.call('ZRANGE', keys[5], 0, -1)) do left[#left + 1] = e end
end
local rows, unrows = {}, {}
for key, fields in pairs(inc) do
  local x, v, b = key:match('^(.-)\\31(.-)\\31(.*)$')
  local hash = prefix .. ':x:' .. x .. ':v:' .. v .. ':b:' .. b
  for f, n in pairs(fields) do
    if f == 'revenue_sq' then
      redis.call('HINCRBYFLOAT', hash, f, string.format('%.17g', n))
    else
      redis.call('HINCRBY', hash, f, string.format('%d', n))
    end
    rows[#rows + 1] = {key, f, n}
  end
  redis.call('SADD', prefix .. ':experiments', x)
  redis.call('SADD', prefix .. ':x:' .. x .. ':variants', v)
  redis.call('ZADD', prefix .. ':x:' .. x .. ':buckets', b, b)
end
for k, n in pairs(un) do
  redis.call('HINCRBY', prefix .. ':unattributed', k, string.format('%d', n))
  unrows[#unrows + 1] = {k, n}
end
out[#batch + 1] = cjson.encode({inc = rows, un = unrows})
for _, e in ipairs(left) do out[#out + 1] = e end
return out
"""

_APPLY_AGGREGATES = """
-- KEYS[1]: applied (hash user -> seq); KEYS[2..]: the keys the arguments name, by index
-- ARGV[1]: JSON [[user, seq, [[key_index, field, n, is_float], ...]], ...]: the entries
-- ARGV[2]: JSON [[command, key_index, member, score], ...]: index sets and user sketches,
--          idempotent by nature, so applied whatever the entries do
-- An entry applies only if seq > applied[user]; returns one '1'/'0' per entry.
local flags = {}
for _, e in ipairs(cjson.decode(ARGV[1])) do
  local user, seq = e[1], e[2]
  local last = tonumber(redis.call('HGET', KEYS[1], user) or '0')
  if seq > last then
    for _, op in ipairs(e[3]) do
      if op[4] == 1 then
        redis.call('HINCRBYFLOAT', KEYS[op[1]], op[2], string.format('%.17g', op[3]))
      else
        redis.call('HINCRBY', KEYS[op[1]], op[2], string.format('%d', op[3]))
      end
    end
    redis.call('HSET', KEYS[1], user, string.format('%d', seq))
    flags[#flags + 1] = '1'
  else
    flags[#flags + 1] = '0'
  end
end
for _, op in ipairs(cjson.decode(ARGV[2])) do
  if op[1] == 'ZADD' then
    redis.call('ZADD', KEYS[op[2]], op[4], op[3])
  else
    redis.call(op[1], KEYS[op[2]], op[3])
  end
end
return table.concat(flags)
"""


# ---- what the worker hands in ---------------------------------------------------------------

@dataclass(frozen=True)
class ImpressionRecord:
    recommendation_id: str
    user_id: str
    variant: str
    experiment: str
    served_ms: int
    item_ids: tuple[str, ...]
    degraded: bool = False

    def packed(self) -> dict:
        return {"k": "i", "r": self.recommendation_id, "x": self.experiment or NO_EXPERIMENT,
                "v": self.variant, "t": self.served_ms, "i": list(self.item_ids), "d": int(self.degraded)}


@dataclass(frozen=True)
class EventRecord:
    event_id: str
    user_id: str
    item_id: str
    type_code: int
    occurred_ms: int
    recommendation_id: str = ""
    position: int = -1  # -1: not given
    value_micros: int = 0  # purchases: Event.value, else the catalog price; 0 for other types

    def packed(self) -> dict:
        return {"k": "e", "id": self.event_id, "it": self.item_id, "ty": self.type_code, "t": self.occurred_ms,
                "r": self.recommendation_id, "p": self.position, "val": self.value_micros}


@dataclass
class Applied:
    """What one write did: per record whether it was new, and the aggregate increments that
    were applied by this call (entries an earlier attempt applied are not in it)."""

    new: list[bool]
    increments: list[tuple[str, str, str, float]] = field(default_factory=list)  # experiment, variant, field, n
    unattributed: list[tuple[str, float]] = field(default_factory=list)  # "<reason>:<type>", n

    def count(self, inc: list, un: list) -> None:
        """Add what the scripts report applied: ``inc`` rows ``[experiment SEP variant SEP bucket,
        field, n]`` and ``un`` rows ``["<reason>:<type>", n]``."""
        for key, fld, n in inc:
            experiment, variant, _ = key.split(SEP)
            self.increments.append((experiment, variant, fld, n))
        self.unattributed += [(reason_type, n) for reason_type, n in un]


@dataclass(frozen=True)
class AttributionConfig:
    window_ms: int = 30 * 60 * 1000
    bucket_ms: int = 60 * 1000
    max_lists: int = 200  # served lists kept per user for the join
    dedup_cap: int = 5000  # record ids remembered per user
    max_pending: int = 200  # events per user waiting for a list named but not seen yet


def _by_user(records: Sequence[ImpressionRecord | EventRecord]) -> dict[str, list[int]]:
    """Each user's records' positions in ``records``, in order (a user's records go in one call)."""
    by_user: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        by_user.setdefault(rec.user_id, []).append(i)
    return by_user


class RedisAttributionStore:
    """The attribution state on Redis or Redis Cluster (see the module docstring).

    ``outbox``: write through the outbox (three steps; what a Redis Cluster needs), or in one
    atomic call per chunk of users (``_JOIN_AND_COUNT``, a single Redis only). By default the
    outbox on a cluster client, one call otherwise. Both keep the same state and aggregates,
    and each applies outbox entries the other left, so a deployment may switch."""

    # Records per _JOIN_AND_COUNT call: a call blocks Redis while it runs (about 25 us a list),
    # so a large batch goes in several, a whole user in each.
    RECORDS_PER_CALL = 128

    def __init__(self, redis, config: AttributionConfig = AttributionConfig(), outbox: bool | None = None) -> None:
        self._redis = redis
        self._config = config
        self._outbox = isinstance(redis, RedisCluster) if outbox is None else outbox
        # The scripts' first arguments (ARGV[1..6]), fixed by the config.
        self._head = (config.window_ms, config.bucket_ms, config.max_lists, config.dedup_cap, config.max_pending,
                      CLOCK_SKEW_MS)
        self._join_sha = redis.register_script(_JOIN_USER).sha
        self._apply_sha = redis.register_script(_APPLY_AGGREGATES).sha
        self._join_and_count_sha = redis.register_script(_JOIN_AND_COUNT).sha

    @property
    def config(self) -> AttributionConfig:
        return self._config

    async def write(self, records: Sequence[ImpressionRecord | EventRecord]) -> Applied:
        """Join and count ``records`` (in order per user), exactly once per record id."""
        if not self._outbox:
            return await self._join_and_count(records)
        new, entries = await self.join(records)
        applied = Applied(new)
        if entries:
            await self.apply(entries, applied)
        return applied

    async def _join_and_count(self, records: Sequence[ImpressionRecord | EventRecord]) -> Applied:
        """One atomic call per chunk of whole users: join, dedup and count together."""
        applied = Applied([False] * len(records))
        chunks, chunk, size = [], [], 0
        for uid, positions in _by_user(records).items():
            if chunk and size + len(positions) > self.RECORDS_PER_CALL:
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append((uid, positions))
            size += len(positions)
        if chunk:
            chunks.append(chunk)
        calls = []
        for chunk in chunks:
            payload = as_json([[uid, [records[i].packed() for i in positions]] for uid, positions in chunk])
            calls.append((self._join_and_count_sha, 0, *self._head, AGG, payload, USER_KEY_BEFORE, USER_KEY_AFTER,
                          TOMBSTONE_AFTER))
        left: list[dict] = []
        for chunk, reply in zip(chunks, await evalsha_all(self._redis, [_JOIN_AND_COUNT], calls)):
            for (_, positions), flags in zip(chunk, reply):
                for i, flag in zip(positions, flags.decode()):
                    applied.new[i] = flag == "1"
            counted = json.loads(reply[len(chunk)])
            applied.count(counted["inc"], counted["un"])
            left += [json.loads(raw) for raw in reply[len(chunk) + 1:]]
        if left:  # an outbox-way write died before it applied these: apply them now
            await self.apply(left, applied)
        return applied

    async def join(self, records: Sequence[ImpressionRecord | EventRecord]) -> tuple[list[bool], list[dict]]:
        """Step 1: per record whether it was new, and every outbox entry of the users in the batch."""
        if not records:
            return [], []
        by_user = _by_user(records)
        calls = [(self._join_sha, 7, *user_keys(uid), keys.forgotten(uid), *self._head, uid,
                  as_json([records[i].packed() for i in positions]))
                 for uid, positions in by_user.items()]
        replies = await evalsha_all(self._redis, [_JOIN_USER], calls)
        new = [False] * len(records)
        entries: list[dict] = []
        for positions, reply in zip(by_user.values(), replies):
            for i, flag in zip(positions, reply[0].decode()):
                new[i] = flag == "1"
            entries += [json.loads(raw) for raw in reply[1:]]
        return new, entries

    async def apply(self, entries: list[dict], applied: Applied) -> None:
        """Steps 2 and 3: apply the entries not applied yet, then empty them from the outboxes."""
        await self._apply(entries, applied)
        pipe = self._redis.pipeline(transaction=False)
        for e in entries:
            pipe.zremrangebyscore(user_keys(e["user"])[4], "-inf", e["s"])
        await pipe.execute()

    async def _apply(self, entries: list[dict], applied: Applied) -> None:
        keys: list[bytes] = [AGG_APPLIED]
        index: dict[bytes, int] = {}

        def k(key: bytes) -> int:
            if key not in index:
                keys.append(key)
                index[key] = len(keys)  # Lua's KEYS are 1-based; KEYS[1] is AGG_APPLIED
            return index[key]

        packed, members = [], {}
        for e in entries:
            incs = []
            for key, fld, n in e["inc"]:
                experiment, variant, bucket = key.split(SEP)
                incs.append([k(bucket_key(experiment, variant, int(bucket))), fld, n, int(fld in FLOAT_FIELDS)])
                members[("SADD", k(AGG_EXPERIMENTS), experiment)] = None
                members[("SADD", k(variants_key(experiment)), variant)] = None
                members[("ZADD", k(buckets_key(experiment)), bucket)] = int(bucket)
            for pair in e["users"]:
                experiment, variant = pair.split(SEP)
                members[("PFADD", k(users_key(experiment, variant)), e["user"])] = None
            for reason_type, n in e["un"]:
                incs.append([k(AGG_UNATTRIBUTED), reason_type, n, 0])
            packed.append([e["user"], e["s"], incs])
        ops = [[cmd, idx, member, score] for (cmd, idx, member), score in members.items()]
        reply = await evalsha_all(self._redis, [_APPLY_AGGREGATES],
                                  [(self._apply_sha, len(keys), *keys, as_json(packed), as_json(ops))])
        for e, flag in zip(entries, reply[0].decode()):
            if flag == "1":
                applied.count(e["inc"], e["un"])

    async def prices_micros(self, item_ids: Sequence[str]) -> dict[str, int]:
        """Catalog prices of ``item_ids`` in millionths (items without one are left out)."""
        from shopstream.catalog.v1 import catalog_pb2

        from services.common.stores import keys

        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return {}
        raw = await self._redis.hmget(keys.CATALOG_ITEMS, ids)
        prices = {}
        for item_id, value in zip(ids, raw):
            if value is not None:
                price = catalog_pb2.CatalogItem.FromString(value).price
                if math.isfinite(price) and price > 0:
                    prices[item_id] = round(price * 1_000_000)
        return prices


# ---- reading the aggregates (the report) ----------------------------------------------------

@dataclass
class VariantSeries:
    """One variant's counters per bucket (bucket start ms -> field -> value) and its users."""

    variant: str
    users: int = 0
    buckets: dict[int, dict[str, float]] = field(default_factory=dict)

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for counters in self.buckets.values():
            for name, n in counters.items():
                out[name] += n
        return dict(out)


async def read_experiment(redis, experiment: str) -> dict[str, VariantSeries]:
    """Every variant of ``experiment`` with its counters per bucket (one pipeline after the
    index reads; PFCOUNT one by one, as redis-py's cluster pipeline refuses it)."""
    variants = sorted(v.decode() for v in await redis.smembers(variants_key(experiment)))
    buckets = [int(b) for b in await redis.zrange(buckets_key(experiment), 0, -1)]
    users = [await redis.pfcount(users_key(experiment, v)) for v in variants]
    pipe = redis.pipeline(transaction=False)
    for v in variants:
        for b in buckets:
            pipe.hgetall(bucket_key(experiment, v, b))
    replies = iter(await pipe.execute())
    out: dict[str, VariantSeries] = {}
    for v, n in zip(variants, users):
        series = VariantSeries(v, users=int(n))
        for b in buckets:
            raw = next(replies)
            if raw:
                series.buckets[b] = {name.decode(): float(n) for name, n in raw.items()}
        out[v] = series
    return out


async def read_unattributed(redis) -> dict[str, float]:
    """``"<reason>:<type>"`` (and ``"<reason>:revenue_micros"``) -> count, over all experiments."""
    return {k.decode(): float(v) for k, v in (await redis.hgetall(AGG_UNATTRIBUTED)).items()}


async def experiments(redis) -> list[str]:
    return sorted(x.decode() for x in await redis.smembers(AGG_EXPERIMENTS))


def as_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
