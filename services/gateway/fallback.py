"""The trending fallback: what a user sees when there is no personal ranking.

Trending items come from Redis, filtered by the catalog snapshot and the user's
exclusions, then padded from the catalog (in stock, allowed, by item id) so the
answer has k items whenever the catalog has k eligible ones. Padded items score
0.0, below every trending score, so scores stay descending.

The trending list itself is cached for ``cache_s`` (scores decay over an hour;
a second of staleness is invisible), so a fallback costs no Redis round trip
and no parsing of the ``pool`` items per request. Concurrent requests on a cold
or expired cache share one read.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable, Collection, Sequence

from services.common.filters import ItemFilter
from services.common.stores.catalog import CatalogSnapshot
from services.common.stores.trending import TrendingStore


def select(
    trending: Sequence[tuple[str, float]],
    snapshot: CatalogSnapshot,
    item_filter: ItemFilter,
    excluded: Collection[str],
    k: int,
    catalog_order: Sequence[str] | None = None,
) -> list[tuple[str, float]]:
    """Pure selection: the first k allowed trending items, then catalog padding."""
    out: list[tuple[str, float]] = []
    taken: set[str] = set()
    for item_id, score in trending:
        if len(out) >= k:
            return out
        if item_id in taken or item_id in excluded or not snapshot.allows(item_id, item_filter):
            continue
        out.append((item_id, score))
        taken.add(item_id)
    if catalog_order is None:
        catalog_order = sorted(snapshot.items)
    for item_id in catalog_order:
        if len(out) >= k:
            break
        if item_id in taken or item_id in excluded or not snapshot.allows(item_id, item_filter):
            continue
        out.append((item_id, 0.0))
        taken.add(item_id)
    return out


class TrendingFallback:
    def __init__(self, trending: TrendingStore, snapshot: Callable[[], CatalogSnapshot], pool: int,
                 cache_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._trending = trending
        self._snapshot = snapshot
        self._pool = pool
        self._order: tuple[int, list[str]] = (-1, [])
        self._cache_s = cache_s
        self._clock = clock
        self._cached: tuple[float, int, list[tuple[str, float]]] = (float("-inf"), 0, [])  # (read at, n, items)
        self._reading: asyncio.Future | None = None
        self._reading_n = 0

    def _catalog_order(self, snapshot: CatalogSnapshot) -> list[str]:
        # Sorting the catalog once per snapshot version, not once per request.
        if self._order[0] != snapshot.version:
            self._order = (snapshot.version, sorted(snapshot.items))
        return self._order[1]

    async def top(self, n: int) -> list[tuple[str, float]]:
        """The top ``n`` trending items, from the cache while it is fresh."""
        read_at, size, items = self._cached
        if self._cache_s > 0 and size >= n and self._clock() - read_at < self._cache_s:
            return items
        reading = self._reading
        if reading is not None and self._reading_n >= n:  # single flight: share the read in progress
            return await asyncio.shield(reading)
        self._reading, self._reading_n = asyncio.ensure_future(self._read(n)), n
        self._reading.add_done_callback(self._read_done)
        return await asyncio.shield(self._reading)

    async def _read(self, n: int) -> list[tuple[str, float]]:
        started = self._clock()
        items = await self._trending.top(n)
        self._cached = (started, n, items)
        return items

    def _read_done(self, fut: asyncio.Future) -> None:
        if self._reading is fut:
            self._reading = None
        if not fut.cancelled():
            fut.exception()  # retrieved here so an unawaited failure is not logged as lost

    async def recommend(self, k: int, item_filter: ItemFilter, excluded: Collection[str] = ()) -> list[tuple[str, float]]:
        top = await self.top(max(self._pool, k))
        snapshot = self._snapshot()
        return select(top, snapshot, item_filter, excluded, k, self._catalog_order(snapshot))

    def category_of(self, item_id: str) -> str:
        return self._snapshot().category(item_id)
