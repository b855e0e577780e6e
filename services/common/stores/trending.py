"""Time-decayed item popularity ("trending") in one sorted set.

Events add a type-dependent weight with ZINCRBY; a periodic decay multiplies all
scores by exp(-interval / half_life * ln 2) with ZUNIONSTORE ... WEIGHTS. A
short lock key makes sure only one features worker decays per interval.
"""
from __future__ import annotations

import math
from typing import Protocol, Sequence

from services.common.stores import keys

EVENT_WEIGHTS = {1: 1.0, 2: 2.0, 3: 4.0, 4: 8.0}  # view, click, add to cart, purchase
_MIN_SCORE = 1e-3


# All of a batch's increments in one command (one slot: the trending key).
_RECORD = """
for i = 1, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
end
return #ARGV / 2
"""

# Decay in one script on the one key: atomic like MULTI/EXEC, and on Redis Cluster the
# client need not ask the server where ZUNIONSTORE's keys are (redis-py's cluster
# transaction pipeline does that with a nested event loop, which fails under asyncio).
_DECAY = """
redis.call('ZUNIONSTORE', KEYS[1], 1, KEYS[1], 'WEIGHTS', ARGV[1])
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
"""


class TrendingStore(Protocol):
    async def record(self, items: Sequence[tuple[str, int]]) -> None: ...

    async def top(self, n: int) -> list[tuple[str, float]]: ...

    async def decay(self, interval_s: float, half_life_s: float) -> bool: ...


class RedisTrendingStore:
    def __init__(self, redis) -> None:
        self._redis = redis
        self._record = redis.register_script(_RECORD)
        self._decay = redis.register_script(_DECAY)

    async def record(self, items: Sequence[tuple[str, int]]) -> None:
        """items: (item_id, event type code) pairs of newly applied events."""
        if not items:
            return
        totals: dict[str, float] = {}
        for item_id, type_code in items:
            totals[item_id] = totals.get(item_id, 0.0) + EVENT_WEIGHTS.get(type_code, 1.0)
        args: list = []
        for item_id, weight in totals.items():
            args += (item_id, weight)
        await self._record(keys=[keys.TRENDING], args=args)

    async def top(self, n: int) -> list[tuple[str, float]]:
        if n <= 0:  # ZREVRANGE 0 -1 would return every item
            return []
        rows = await self._redis.zrevrange(keys.TRENDING, 0, n - 1, withscores=True)
        return [(item.decode(), float(score)) for item, score in rows]

    async def decay(self, interval_s: float, half_life_s: float) -> bool:
        """Decay all scores once per interval across all workers; True if this call did it."""
        got = await self._redis.set(keys.TRENDING_DECAY_LOCK, b"1", nx=True, px=max(1, int(interval_s * 1000 * 0.9)))
        if not got:
            return False
        factor = math.exp(-interval_s / half_life_s * math.log(2))
        await self._decay(keys=[keys.TRENDING], args=[repr(factor), repr(_MIN_SCORE)])
        return True
