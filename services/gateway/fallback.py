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
import functools
import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

import numpy as np

from services.common.filters import CatalogMasks, ItemFilter, RowFilter
from services.common.stores.catalog import CatalogSnapshot
from services.common.stores.trending import TrendingStore
from services.rules.evaluate import Interactions, ItemTable
from services.rules.merchandising import Merchandising

PAD_CHUNK = 256


@dataclass(frozen=True)
class Compiled:
    """Item ids in order, with their catalog facts compiled once (``CatalogMasks``);
    each request then only compiles its filter (``RowFilter``, the one place the rules live)."""

    ids: list[str]
    index_of: dict[str, int]
    masks: CatalogMasks
    snapshot: CatalogSnapshot = field(default_factory=CatalogSnapshot, repr=False)

    @classmethod
    def build(cls, item_ids: Sequence[str], snapshot: CatalogSnapshot) -> Compiled:
        ids = list(dict.fromkeys(item_ids))
        return cls(ids, {item_id: n for n, item_id in enumerate(ids, start=1)}, CatalogMasks.build(ids, snapshot),
                   snapshot)

    @functools.cached_property
    def table(self) -> ItemTable:
        """The catalog facts of ``ids`` for filter expressions and boosts (built when first needed)."""
        return ItemTable.build(self.ids, self.snapshot)

    def allowed(self, item_filter: ItemFilter, excluded: Collection[str], merch: Merchandising | None = None,
                interactions: Interactions = Interactions()) -> list[tuple[str, bool]]:
        """(item id, allowed) in order, under this filter, the user's exclusions and the request's
        filter expression (the same rules the ranker applies)."""
        row_filter = RowFilter.build(self.masks, self.index_of, item_filter, excluded)
        ok = row_filter.allows(np.arange(1, len(self.ids) + 1))
        expression = merch.eligible(self.table, interactions) if merch is not None else None
        if expression is not None:
            ok &= expression
        return list(zip(self.ids, ok.tolist()))


def select(
    trending: Sequence[tuple[str, float]],
    snapshot: CatalogSnapshot,
    item_filter: ItemFilter,
    excluded: Collection[str],
    k: int,
    catalog_order: Sequence[str] | None = None,
    compiled: Compiled | None = None,
    merch: Merchandising | None = None,
    interactions: Interactions = Interactions(),
) -> list[tuple[str, float]]:
    """Pure selection: the first k allowed trending items, then catalog padding.

    ``compiled``: ``Compiled.build`` of the trending ids under ``snapshot``, when the caller keeps one.
    ``merch``: the request's filter expression applies like the built-in filter; boosts and the
    category cap re-order the allowed trending items (``merchandised``).
    """
    out: list[tuple[str, float]] = []
    if k <= 0:
        return out
    scores = dict(trending)
    compiled = compiled or Compiled.build(list(scores), snapshot)
    allowed = compiled.allowed(item_filter, excluded, merch, interactions)
    if merch is not None and (merch.boosts or merch.max_per_category):
        out = merchandised([(i, scores[i]) for i, ok in allowed if ok], compiled, merch, k)
        if len(out) >= k:
            return out
        allowed = []
    for item_id, ok in allowed:
        if ok:
            out.append((item_id, scores[item_id]))
            if len(out) >= k:
                return out
    if catalog_order is None:
        catalog_order = sorted(snapshot.items)
    chunk = max(PAD_CHUNK, 2 * k)  # padding is compiled a chunk of the catalog at a time
    for start in range(0, len(catalog_order), chunk):
        padding = Compiled.build([i for i in catalog_order[start:start + chunk] if i not in scores], snapshot)
        for item_id, ok in padding.allowed(item_filter, excluded, merch, interactions):
            if ok:
                out.append((item_id, 0.0))
                if len(out) >= k:
                    return out
    return out


def merchandised(allowed: list[tuple[str, float]], compiled: Compiled, merch: Merchandising,
                 k: int) -> list[tuple[str, float]]:
    """Allowed trending items re-ordered by boosts and cut by the category cap.

    Trending scores are counts, not the model's units, so a boost here adds its weight to the
    item's relevance as a rank in [0, 1] (1 = the top trending item): any boost of 1 or more
    lifts an item above every unboosted one (docs/rules.md). The cap fills from the best items
    it skipped when it would leave the row short, as the ranker's does.
    """
    if not allowed:
        return []
    n = len(allowed)
    boost = merch.boost(compiled.table)
    keyed = []
    for rank, (item_id, score) in enumerate(allowed):
        relevance = 1.0 - rank / n
        if boost is not None:
            relevance += float(boost[compiled.index_of[item_id] - 1])
        keyed.append((relevance, -rank, item_id, score))
    keyed.sort(reverse=True)
    ordered = [(item_id, score) for _, _, item_id, score in keyed]
    if not merch.max_per_category:
        return ordered[:k]
    counts: dict[str, int] = {}
    kept, skipped = [], []
    for item_id, score in ordered:
        category = compiled.snapshot.category(item_id)
        if counts.get(category, 0) < merch.max_per_category:
            counts[category] = counts.get(category, 0) + 1
            kept.append((item_id, score))
        else:
            skipped.append((item_id, score))
    return (kept + skipped)[:k]


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
        # The trending list compiled against the catalog: rebuilt when either changes.
        self._compiled: tuple[list, int, Compiled | None] = ([], -1, None)

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

    async def recommend(self, k: int, item_filter: ItemFilter, excluded: Collection[str] = (),
                        merch: Merchandising | None = None,
                        interactions: Interactions = Interactions()) -> list[tuple[str, float]]:
        top = await self.top(max(self._pool, k))
        snapshot = self._snapshot()
        return select(top, snapshot, item_filter, excluded, k, self._catalog_order(snapshot),
                      self._compile(top, snapshot), merch, interactions)

    def catalog(self) -> CatalogSnapshot:
        """The catalog snapshot the fallback filters with (titles and categories for reasons)."""
        return self._snapshot()

    def _compile(self, top: list[tuple[str, float]], snapshot: CatalogSnapshot) -> Compiled:
        cached_top, version, compiled = self._compiled
        if compiled is None or cached_top is not top or version != snapshot.version:
            compiled = Compiled.build([item_id for item_id, _ in top], snapshot)
            self._compiled = (top, snapshot.version, compiled)
        return compiled

    def category_of(self, item_id: str) -> str:
        return self._snapshot().category(item_id)
