"""A real ranker server on 127.0.0.1:0 over real Redis, started as `shopstream ranker`
starts it, and a toy catalog whose scores are known.

Three categories on three axes; within one, a larger index scores higher.
"""
from __future__ import annotations

import contextlib
import dataclasses

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shopstream.catalog.v1 import catalog_pb2
from shopstream.ranker.v1 import ranker_pb2_grpc

from services.common.stores.user_state import EventWrite, RedisUserStateStore
from services.ranker.main import build, running
from services.ranker.settings import RankerSettings

CATEGORIES = {"s": "shoes", "h": "hats", "b": "bags"}
ITEMS = [f"{p}{n}" for p in CATEGORIES for n in range(1, 5)]
AXIS = {p: i for i, p in enumerate(CATEGORIES)}


def vectors(boost: dict[str, float] | None = None) -> np.ndarray:
    out = np.zeros((len(ITEMS), 4), dtype=np.float32)
    for row, item in enumerate(ITEMS):
        out[row, AXIS[item[0]]] = 1.0 + 0.1 * int(item[1:]) + (boost or {}).get(item, 0.0)
    return out


def catalog_items(out_of_stock: set[str] = frozenset()) -> list[catalog_pb2.CatalogItem]:
    return [catalog_pb2.CatalogItem(item_id=i, category=CATEGORIES[i[0]], in_stock=i not in out_of_stock)
            for i in ITEMS]


async def add_history(states: RedisUserStateStore, user: str, items: list[str], purchased: set[str] = frozenset()):
    await states.apply_events([EventWrite(f"{user}-{n}", user, item, 4 if item in purchased else 1, 1_000 + n)
                               for n, item in enumerate(items)])


@contextlib.asynccontextmanager
async def ranker_server(models_dir, redis_url, wrap_states=None):
    """A ranker on 127.0.0.1:0 (its own build and running), its user state store optionally
    wrapped, with the catalog read and the published model loaded; yields its address."""
    settings = RankerSettings(addr="127.0.0.1:0", models_dir=models_dir, redis_url=redis_url, prefer_gpu=False)
    deps = build(settings)
    if wrap_states:
        deps = dataclasses.replace(deps, user_states=wrap_states(deps.user_states))
    async with running(settings, deps) as ranker:
        await deps.catalog.refresh()
        await deps.holder.poll_once()
        assert deps.holder.current is not None
        yield f"127.0.0.1:{ranker.port}"


class Ranker:
    """One ranker started through ``services.ranker.main.running`` (as ``shopstream ranker``
    starts it), its client stubs and its dependencies.

    Its background catalog refresh and model reload run once at start and then only
    every hour, so a test decides when a new bundle or catalog is picked up
    (``holder.poll_once()``, ``refresh_catalog()``).
    """

    def __init__(self, models_dir, redis_client, redis_url, max_k=50, **settings):
        defaults = dict(prefer_gpu=False, failed_retry_s=0, reload_interval_s=3600, catalog_refresh_s=3600)
        self.settings = RankerSettings(addr="127.0.0.1:0", models_dir=models_dir, redis_url=redis_url,
                                       max_k=max_k, **{**defaults, **settings})
        self.redis = redis_client
        self._running = running(self.settings)

    async def __aenter__(self):
        started = await self._running.__aenter__()
        self.port, self.deps = started.port, started.deps
        self.holder, self.catalog, self.states = self.deps.holder, self.deps.catalog, self.deps.user_states
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = ranker_pb2_grpc.RankerServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        return self

    async def __aexit__(self, *exc):
        await self.channel.close()
        await self._running.__aexit__(*exc)

    async def load_model(self) -> None:
        """The published bundle loaded (by this call or by the start-up poll)."""
        await self.holder.poll_once()
        assert self.holder.current is not None

    async def status(self, service: str = "") -> int:
        return (await self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)).status

    async def refresh_catalog(self):
        await self.catalog.refresh()
        await self.holder.rebuild_masks()


def ids(response) -> list[str]:
    return [i.item_id for i in response.items]
