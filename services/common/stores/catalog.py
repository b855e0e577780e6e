"""The catalog: written by the features service from the catalog topic, read by
ranker and gateway through a periodically refreshed in-memory snapshot.

Items absent from the catalog (e.g. a model trained on a dataset before any
catalog was published) count as in stock with no category.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from shopstream.catalog.v1 import catalog_pb2

from services.common.periodic import run_periodically
from services.common.stores import keys

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogSnapshot:
    version: int = 0
    items: dict[str, catalog_pb2.CatalogItem] = field(default_factory=dict)

    def category(self, item_id: str) -> str:
        item = self.items.get(item_id)
        return item.category if item is not None else ""

    def in_stock(self, item_id: str) -> bool:
        item = self.items.get(item_id)
        return True if item is None else item.in_stock


class CatalogStore(Protocol):
    async def upsert(self, items: Sequence[catalog_pb2.CatalogItem]) -> None: ...

    async def version(self) -> int: ...

    async def snapshot(self) -> CatalogSnapshot: ...


class RedisCatalogStore:
    def __init__(self, redis) -> None:
        self._redis = redis

    async def upsert(self, items: Sequence[catalog_pb2.CatalogItem]) -> None:
        if not items:
            return
        pipe = self._redis.pipeline(transaction=True)  # both keys share the {catalog} slot
        pipe.hset(keys.CATALOG_ITEMS, mapping={it.item_id: it.SerializeToString() for it in items})
        pipe.incr(keys.CATALOG_VERSION)
        await pipe.execute()

    async def version(self) -> int:
        return int(await self._redis.get(keys.CATALOG_VERSION) or 0)

    async def snapshot(self) -> CatalogSnapshot:
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(keys.CATALOG_VERSION)
        pipe.hgetall(keys.CATALOG_ITEMS)
        version, raw = await pipe.execute()
        items = {k.decode(): catalog_pb2.CatalogItem.FromString(v) for k, v in raw.items()}
        return CatalogSnapshot(version=int(version or 0), items=items)


class CatalogCache:
    """Holds the latest snapshot; ``run()`` polls the version and reloads on change."""

    def __init__(self, store: CatalogStore, refresh_s: float = 1.0) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self.snapshot = CatalogSnapshot()
        self._listeners: list = []

    def on_change(self, callback) -> None:
        """callback(snapshot) runs after each reload (e.g. the ranker rebuilds its masks)."""
        self._listeners.append(callback)

    async def refresh(self) -> bool:
        if await self._store.version() == self.snapshot.version and self.snapshot.version:
            return False
        snap = await self._store.snapshot()
        if snap.version == self.snapshot.version and self.snapshot.version:
            return False
        self.snapshot = snap
        for cb in self._listeners:
            cb(snap)
        logger.info("catalog reloaded", extra={"catalog_version": snap.version, "items": len(snap.items)})
        return True

    async def run(self) -> None:
        """Refresh every ``refresh_s`` until cancelled; a Redis blip skips one refresh."""
        await run_periodically(self.refresh, self._refresh_s, what="catalog refresh")
