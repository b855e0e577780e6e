"""The model being served, and its hot reload.

``poll_once`` checks ``<models_dir>/LATEST``; a new version is loaded and warmed
up in the executor, then swapped in with one reference assignment, so a request
that took ``holder.current`` keeps a consistent model, masks and vocabulary.
A bundle that fails to load is logged and counted, and the old model stays.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np

from services.common.filters import ItemFilter
from services.common.bundle.files import latest_version
from services.common.bundle.model import ModelBundle, load_bundle
from services.common.bundle.reload import ReloadPolicy
from services.common.bundle.sessions import on_cuda
from services.common.periodic import run_periodically
from services.common.stores.catalog import CatalogSnapshot
from services.ranker.encoding import Encoder, session_threads
from services.ranker.items import ServingItems
from services.ranker.metrics import RankerMetrics
from services.ranker.runtime import ScoringConfig, ScoringPlan
from services.ranker.scorers import CatalogScorer, build_scorer
from services.common.filters import CatalogMasks, eligible_mask
from services.ranker.scoring import top_k, unit_rows, user_scores

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A bundle ready to serve: the items it ranks (trained + new from attributes),
    cosine-ready vectors, catalog masks, the tuned encoder session and the
    planned catalog scorer (exact or ANN)."""

    bundle: ModelBundle
    items: ServingItems
    unit_embeddings: np.ndarray
    masks: CatalogMasks
    plan: ScoringPlan | None = None
    scorer: CatalogScorer | None = None
    encoder: Encoder | None = None

    @property
    def version(self) -> str:
        return self.bundle.version

    def encode(self, histories: list[list[str]]) -> np.ndarray:
        """User embeddings [B, dim] from the bundle's encoder session (chunked by ``encoder``)."""
        if self.encoder is None:
            return self.bundle.encode(histories)
        return self.encoder.encode(self.bundle, histories)


def warm_up(model: LoadedModel) -> None:
    """One dummy encode + score, so the first real request pays no lazy initialisation."""
    bundle, items = model.bundle, model.items
    vec = model.encode([bundle.item_ids[:1]])[0]
    if vec.shape != (bundle.dim,):
        raise ValueError(f"encoder returned shape {vec.shape}, expected ({bundle.dim},)")
    top_k(user_scores(items.embeddings, vec), eligible_mask(model.masks, items.index_of, ItemFilter()), 10)
    if model.scorer is not None:
        model.scorer.candidates(vec[None, :], 10)


class ModelHolder:
    def __init__(
        self,
        models_dir: str | Path,
        executor: Executor,
        metrics: RankerMetrics,
        *,
        scoring: ScoringConfig,
        reload_interval_s: float = 10.0,
        failed_retry_s: float = 300.0,
        encode_pool: Executor | None = None,
    ) -> None:
        """``encode_pool`` runs the chunks of large encoder batches (encoding.Encoder)."""
        self._models_dir = Path(models_dir)
        self._executor = executor
        self._encode_pool = encode_pool
        self._metrics = metrics
        self._scoring = scoring
        self._reload_interval_s = reload_interval_s
        self._policy = ReloadPolicy(failed_retry_s)
        self._catalog = CatalogSnapshot()
        self._listeners: list[Callable[[LoadedModel], Awaitable[None] | None]] = []
        self._rebuild: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self.current: LoadedModel | None = None

    def on_swap(self, callback: Callable[[LoadedModel], Awaitable[None] | None]) -> None:
        """callback(model), awaited if async, after each swap (e.g. health turns SERVING)."""
        self._listeners.append(callback)

    def _load(self, version: str, catalog: CatalogSnapshot) -> LoadedModel:
        config = self._scoring
        providers = config.plan(0).providers
        bundle = load_bundle(self._models_dir, version, prefer_gpu=config.prefer_gpu,
                             intra_op_threads=session_threads(providers, config.intra_op_threads),
                             allow_spinning=config.allow_spinning)
        encoder = Encoder(on_cuda=on_cuda(bundle.session), intra_op_threads=config.intra_op_threads,
                          pool=self._encode_pool)
        model = self._serving(bundle, encoder, catalog)
        warm_up(model)
        return model

    def _serving(self, bundle: ModelBundle, encoder: Encoder | None,
                 catalog: CatalogSnapshot) -> LoadedModel:
        """The model over the catalog's items: new items embedded, then vectors, masks and scorer to match."""
        items = ServingItems.build(bundle, catalog)
        plan = self._scoring.plan(len(items.item_ids))
        return LoadedModel(bundle, items, unit_rows(items.embeddings), CatalogMasks.build(items.item_ids, catalog),
                           plan, build_scorer(plan, items.embeddings, self._scoring), encoder)

    async def poll_once(self) -> bool:
        """Load LATEST if it is new; True when a model was swapped in."""
        async with self._lock:
            version = latest_version(self._models_dir)
            current = self.current
            if not self._policy.due(version, current.version if current else None):
                return False
            loop = asyncio.get_running_loop()
            try:
                model = await loop.run_in_executor(self._executor, self._load, version, self._catalog)
            except Exception:
                self._policy.failed(version)
                self._metrics.model_load_failures.inc()
                logger.exception("model bundle %s failed to load; still serving %s", version,
                                 current.version if current else "nothing")
                return False
            self._policy.loaded(version)
            if model.masks.catalog_version != self._catalog.version:  # catalog moved while loading
                model = await loop.run_in_executor(self._executor, self._refresh_catalog, model, self._catalog)
            self.current = model
            self._metrics.set_model_version(current.version if current else None, model.version)
            self._metrics.model_loads.inc()
            self._metrics.model_items.set(len(model.items.item_ids))
            logger.info("serving model %s", model.version,
                        extra={"model_version": model.version, "providers": model.bundle.providers,
                               "scoring": model.plan.describe()})
            for cb in self._listeners:
                result = cb(model)
                if inspect.isawaitable(result):
                    await result
            return True

    async def run(self) -> None:
        """Poll forever; with no bundle yet the service stays NOT_SERVING and keeps polling."""
        await run_periodically(self.poll_once, self._reload_interval_s, what="model poll", level=logging.ERROR)

    # -- catalog -----------------------------------------------------------

    def on_catalog(self, snapshot: CatalogSnapshot) -> None:
        """CatalogCache listener: rebuild the masks off the event loop."""
        self._catalog = snapshot
        self._metrics.catalog_items.set(len(snapshot.items))
        if self._rebuild is None or self._rebuild.done():
            self._rebuild = asyncio.get_running_loop().create_task(self.rebuild_masks())

    def _refresh_catalog(self, model: LoadedModel, catalog: CatalogSnapshot) -> LoadedModel:
        """Masks for the new catalog; the item table and scorer too when new items arrived."""
        if ServingItems.new_items(model.bundle, catalog) != model.items.new_item_ids:
            return self._serving(model.bundle, model.encoder, catalog)
        return replace(model, masks=CatalogMasks.build(model.items.item_ids, catalog))

    async def rebuild_masks(self) -> None:
        """Bring the current model up to the latest catalog (idempotent)."""
        while True:
            model, catalog = self.current, self._catalog
            if model is None or model.masks.catalog_version == catalog.version:
                return
            updated = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._refresh_catalog, model, catalog)
            if self.current is model:
                self.current = updated
                self._metrics.model_items.set(len(updated.items.item_ids))
                logger.info("catalog applied", extra={"catalog_version": catalog.version,
                                                      "new_items": len(updated.items.new_item_ids)})
