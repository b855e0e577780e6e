"""A plain, comparable snapshot of one user's state in Redis."""
from __future__ import annotations

import redis

from services.common.stores import keys


def user_snapshot(url: str, user: str, trending_items: tuple[str, ...] = ()) -> dict:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return {
            "history": list(reversed(client.lrange(keys.history(user), 0, -1))),
            "purchased": sorted(client.smembers(keys.purchased(user))),
            "counts": client.hgetall(keys.counters(user)),
            "dedup_size": client.zcard(keys.dedup(user)),
            "trending": {item: client.zscore(keys.TRENDING, item) for item in trending_items},
        }
    finally:
        client.close()
