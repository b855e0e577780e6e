"""The trending fallback: what a user sees when there is no personal ranking.

Trending items come from Redis, filtered by the catalog snapshot and the user's
exclusions, then padded from the catalog (in stock, allowed, by item id) so the
answer has k items whenever the catalog has k eligible ones. Padded items score
0.0, below every trending score, so scores stay descending.
"""
from __future__ import annotations

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
    def __init__(self, trending: TrendingStore, snapshot: Callable[[], CatalogSnapshot], pool: int) -> None:
        self._trending = trending
        self._snapshot = snapshot
        self._pool = pool
        self._order: tuple[int, list[str]] = (-1, [])

    def _catalog_order(self, snapshot: CatalogSnapshot) -> list[str]:
        # Sorting the catalog once per snapshot version, not once per request.
        if self._order[0] != snapshot.version:
            self._order = (snapshot.version, sorted(snapshot.items))
        return self._order[1]

    async def recommend(self, k: int, item_filter: ItemFilter, excluded: Collection[str] = ()) -> list[tuple[str, float]]:
        top = await self._trending.top(max(self._pool, k))
        snapshot = self._snapshot()
        return select(top, snapshot, item_filter, excluded, k, self._catalog_order(snapshot))

    def category_of(self, item_id: str) -> str:
        return self._snapshot().category(item_id)
