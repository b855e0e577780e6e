"""The first "trending" list of a new stack: real popularity, not catalog order.

Before any live traffic the trending set is empty and the gateway's fallback would pad from
the catalog in id order. ``shopstream up`` seeds the set from the training data's interaction
counts instead, scaled so the most popular item weighs ``SEED_TOP_WEIGHT`` (a few views'
worth): live events outweigh the seed within seconds, and the features worker's decay fades
it like any other trending score. Only an empty set is seeded, so a restart on a durable
Redis keeps the trending it had.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from services.common.infra import connect_redis
from services.common.stores import keys

SEED_TOP_WEIGHT = 5.0
SEED_ITEMS = 500  # the gateway's default trending pool

_SEED_IF_EMPTY = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
for i = 1, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
"""


def popularity(sequences: Mapping[str, Sequence[str]] | Iterable[Sequence[str]]) -> list[tuple[str, int]]:
    """(item id, interactions) over every sequence, most popular first; ties by item id."""
    seqs = sequences.values() if isinstance(sequences, Mapping) else sequences
    counts = Counter(item for seq in seqs for item in seq)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def seed_scores(ranked: Sequence[tuple[str, int]], limit: int = SEED_ITEMS,
                top_weight: float = SEED_TOP_WEIGHT) -> list[tuple[str, float]]:
    """The ``limit`` most popular items with scores proportional to their counts."""
    top = [(item, n) for item, n in ranked[:limit] if n > 0]
    if not top:
        return []
    scale = top_weight / top[0][1]
    return [(item, n * scale) for item, n in top]


async def _seed(redis_url: str, scores: Sequence[tuple[str, float]]) -> int:
    client = connect_redis(redis_url)
    try:
        args: list = []
        for item, score in scores:
            args += (repr(float(score)), item)
        return int(await client.eval(_SEED_IF_EMPTY, 1, keys.TRENDING, *args))
    finally:
        await client.aclose()


def seed_trending(redis_url: str, sequences, limit: int = SEED_ITEMS) -> int:
    """Seeds an empty trending set with the data's popularity; returns the items written
    (0 when the set already had items)."""
    scores = seed_scores(popularity(sequences), limit)
    if not scores:
        return 0
    return asyncio.run(_seed(redis_url, scores))
