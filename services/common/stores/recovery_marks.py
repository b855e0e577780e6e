"""Recovery marks: per Kafka partition, the offset below which Redis holds every event's effect.

The features worker writes them (``services/features/recovery.py``) and reads them back to
find out whether Redis lost data: a mark that is gone (FLUSHALL, a restart without
persistence) or lower than the worker last wrote (a replica promoted without the latest
writes, an AOF that lost its last second) means the state below the partition's consumer
position is incomplete, and the worker replays the retained log from the mark (or from the
log's beginning).

All marks live in one hash (``keys.RECOVERY_MARKS``) in its own hash slot, so a whole
check is one script call on Redis Cluster too. A mark is only ever *created* by
:meth:`set` (the start of a build or rebuild); :meth:`advance` never recreates a missing
one, so a loss between two checks cannot be papered over by the next advance.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from services.common.stores import keys

# KEYS: the marks hash. ARGV: triples (field, expected, new). Per field: gone -> "" (never
# recreated); lower than expected -> its value (rolled back, left alone); else raised to
# new when new is higher, and the value it then holds is returned.
_ADVANCE = """
local out = {}
for i = 1, #ARGV, 3 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if not cur then
    out[#out + 1] = ''
  else
    local value = tonumber(cur)
    local new = tonumber(ARGV[i + 2])
    if value >= tonumber(ARGV[i + 1]) and new > value then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
      value = new
    end
    out[#out + 1] = tostring(value)
  end
end
return out
"""


class RecoveryMarks(Protocol):
    async def read(self, fields: list[str]) -> dict[str, int | None]:
        """The marks of ``fields``; None for a missing one."""

    async def set(self, values: Mapping[str, int]) -> None:
        """Create or overwrite marks (the start of a build or a rebuild)."""

    async def advance(self, entries: Mapping[str, tuple[int, int]]) -> dict[str, int | None]:
        """``field -> (expected, new)``: raise each existing mark that is at least ``expected``
        to ``new`` (never lower it, never create it). Returns each mark's value after the call,
        None where it is missing; a value below ``expected`` means it was rolled back."""


class RedisRecoveryMarks:
    def __init__(self, redis) -> None:
        self._redis = redis
        self._advance = redis.register_script(_ADVANCE)  # NOSCRIPT after a restart: redis-py reloads it

    async def read(self, fields: list[str]) -> dict[str, int | None]:
        if not fields:
            return {}
        values = await self._redis.hmget(keys.RECOVERY_MARKS, fields)
        return {f: (int(v) if v is not None else None) for f, v in zip(fields, values)}

    async def set(self, values: Mapping[str, int]) -> None:
        if values:
            await self._redis.hset(keys.RECOVERY_MARKS, mapping={f: int(v) for f, v in values.items()})

    async def advance(self, entries: Mapping[str, tuple[int, int]]) -> dict[str, int | None]:
        if not entries:
            return {}
        args: list = []
        for field, (expected, new) in entries.items():
            args += (field, int(expected), int(new))
        replies = await self._advance(keys=[keys.RECOVERY_MARKS], args=args)
        return {f: (int(r) if r not in (b"", "") else None) for f, r in zip(entries, replies)}


class MemoryRecoveryMarks:
    """RecoveryMarks in a dict (unit tests); ``clear()`` plays FLUSHALL."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def clear(self) -> None:
        self.values.clear()

    async def read(self, fields: list[str]) -> dict[str, int | None]:
        return {f: self.values.get(f) for f in fields}

    async def set(self, values: Mapping[str, int]) -> None:
        self.values.update({f: int(v) for f, v in values.items()})

    async def advance(self, entries: Mapping[str, tuple[int, int]]) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for field, (expected, new) in entries.items():
            value = self.values.get(field)
            if value is not None and value >= expected and new > value:
                self.values[field] = value = int(new)
            out[field] = value
        return out
