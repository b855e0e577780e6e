"""The models being served, and their hot reload.

The holder keeps the live model (the version ``<models_dir>/LATEST`` names) and the
candidates (the newest versions listed in ``<models_dir>/CANDIDATES``, at most
``max_models`` models in all; ``services/common/bundle/registry.py``). ``poll_once`` reads
both files; a version to add is loaded and warmed up in the executor, and the new set of
models is swapped in with one reference assignment (``ModelSet``), so a request that took
``holder.models`` keeps consistent models, masks and vocabularies.

A bundle that fails to load is logged, counted and retried after ``failed_retry_s``; the
models already loaded stay. The live model is replaced only by a LATEST that loaded: a
broken new LATEST leaves the old one live, a broken candidate disturbs nothing. A version
that moves from candidate to LATEST (a promotion) switches at once, without a reload.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Awaitable, Callable, Mapping

import numpy as np

from services.common.filters import ItemFilter
from services.common.bundle.files import latest_version
from services.common.bundle.registry import candidate_versions
from services.common.bundle.model import ModelBundle, load_bundle
from services.common.bundle.reload import ReloadPolicy
from services.common.bundle.sessions import on_cuda
from services.common.periodic import run_periodically
from services.common.stores.catalog import CatalogSnapshot
from services.ranker.encoding import Encoder, session_threads
from services.ranker.items import ServingItems
from services.ranker.memory import model_memory
from services.ranker.metrics import CANDIDATE, LIVE, RankerMetrics
from services.ranker.runtime import ScoringConfig, ScoringPlan
from services.ranker.scorers import CatalogScorer, build_scorer
from services.common.filters import CatalogMasks, eligible_mask
from services.ranker.scoring import top_k, unit_rows, user_scores
from services.rules.evaluate import ItemTable

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
    catalog: CatalogSnapshot | None = field(default=None, repr=False)  # what ``masks`` were built from

    @functools.cached_property
    def rules_table(self) -> ItemTable:
        """The catalog facts filter expressions and boosts read, per vocabulary index (0: padding).
        Built on the first request that needs it, once per catalog version of this model."""
        return ItemTable.build(["", *self.items.item_ids], self.catalog or CatalogSnapshot())

    @property
    def version(self) -> str:
        return self.bundle.version

    def encode(self, histories: list[list[str]]) -> np.ndarray:
        """User embeddings [B, dim] from the bundle's encoder session (chunked by ``encoder``)."""
        if self.encoder is None:
            return self.bundle.encode(histories)
        return self.encoder.encode(self.bundle, histories)

    def encode_rows(self, rows: list[list[int]]) -> np.ndarray:
        """``encode`` for histories already as vocabulary indices (``bundle.index_rows``)."""
        if self.encoder is None:
            return self.bundle.encode_rows(rows)
        return self.encoder.encode_rows(self.bundle, rows)


def warm_up(model: LoadedModel) -> None:
    """One dummy encode + score, so the first real request pays no lazy initialisation."""
    bundle, items = model.bundle, model.items
    vec = model.encode([bundle.item_ids[:1]])[0]
    if vec.shape != (bundle.dim,):
        raise ValueError(f"encoder returned shape {vec.shape}, expected ({bundle.dim},)")
    top_k(user_scores(items.embeddings, vec), eligible_mask(model.masks, items.index_of, ItemFilter()), 10)
    if model.scorer is not None:
        model.scorer.candidates(vec[None, :], 10)


@dataclass(frozen=True)
class ModelSet:
    """The models loaded at one moment, each version once, and which of them is live."""

    models: Mapping[str, LoadedModel] = field(default_factory=dict)
    live_version: str | None = None

    @property
    def live(self) -> LoadedModel | None:
        return self.models.get(self.live_version) if self.live_version else None

    def get(self, version: str) -> LoadedModel | None:
        """``version``'s model ("" = the live one), or None when it is not loaded."""
        return self.live if not version else self.models.get(version)

    def role(self, version: str) -> str:
        return LIVE if version == self.live_version else CANDIDATE

    def describe(self) -> str:
        """"v2 (live), v3" : the loaded versions, live first."""
        ordered = sorted(self.models, key=lambda v: (v != self.live_version, v))
        return ", ".join(f"{v} (live)" if v == self.live_version else v for v in ordered) or "none"

    def with_model(self, model: LoadedModel) -> "ModelSet":
        return ModelSet({**self.models, model.version: model}, self.live_version)

    def without(self, versions: set[str]) -> "ModelSet":
        return ModelSet({v: m for v, m in self.models.items() if v not in versions}, self.live_version)


def _reason(exc: BaseException) -> str:
    """Why a bundle did not load, short enough for a status message."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


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
        max_models: int = 3,
    ) -> None:
        """``encode_pool`` runs the chunks of large encoder batches (encoding.Encoder);
        ``max_models`` caps the loaded models, the live one included."""
        if max_models < 1:
            raise ValueError(f"max_models must be at least 1, got {max_models}")
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
        self.max_models = max_models
        self._set = ModelSet()
        self._failures: dict[str, str] = {}  # version -> why its last load failed
        self._not_loaded: dict[str, str] = {}  # as of the last poll
        self._series: set[tuple[str, str]] = set()

    @property
    def current(self) -> LoadedModel | None:
        """The live model (None until one is loaded)."""
        return self._set.live

    @property
    def models(self) -> ModelSet:
        """Every loaded model; take it once per request for a consistent view."""
        return self._set

    def not_loaded(self) -> dict[str, str]:
        """Versions LATEST or CANDIDATES named at the last poll that are not loaded, and why."""
        return dict(self._not_loaded)

    def on_swap(self, callback: Callable[[LoadedModel], Awaitable[None] | None]) -> None:
        """callback(model), awaited if async, after each change of the live model (e.g. health turns SERVING)."""
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
                           plan, build_scorer(plan, items.embeddings, self._scoring), encoder, catalog)

    def wanted(self) -> tuple[str | None, list[str], list[str]]:
        """(LATEST, the candidates to hold, newest first, and those the cap leaves out).

        The live model takes one of the ``max_models`` places; the newest candidates get the rest.
        """
        latest = latest_version(self._models_dir)
        listed = [v for v in candidate_versions(self._models_dir) if v != latest]
        room = self.max_models - 1
        keep = listed[len(listed) - room:] if room else []
        return latest, keep[::-1], listed[:len(listed) - len(keep)]

    async def poll_once(self) -> bool:
        """Bring the loaded models in line with LATEST and CANDIDATES; True when they changed.

        Versions no longer named are dropped first (never the live one before its successor
        loaded), then LATEST is made live, then missing candidates load while there is room.
        """
        async with self._lock:
            latest, candidates, over = self.wanted()
            named = {latest, *candidates} - {None}
            stale = {v for v in self._set.models if v not in named and v != self._set.live_version}
            changed = bool(stale)
            if stale:
                self._set = self._set.without(stale)
                logger.info("unloaded models %s", ", ".join(sorted(stale)))
            cap = f"over the limit of {self.max_models} loaded models (SHOPSTREAM_RANKER_MAX_MODELS)"
            left_out = dict.fromkeys(over, cap)
            if latest is not None:
                changed |= await self._make_live(latest, set(candidates))
            for version in candidates:
                if version in self._set.models:
                    continue
                if len(self._set.models) >= self.max_models:  # the outgoing live model still holds a place
                    left_out[version] = cap
                elif await self._add_candidate(version):
                    changed = True
            self._not_loaded = {**{v: self._failures[v] for v in named
                                   if v not in self._set.models and v in self._failures}, **left_out}
            if changed:
                self._publish_models()
            return changed

    async def _load_checked(self, version: str) -> LoadedModel | None:
        """``version`` loaded, warmed up and on the current catalog; None (logged, counted) if it fails."""
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(self._executor, self._load, version, self._catalog)
        except Exception as exc:
            self._policy.failed(version)
            self._failures[version] = _reason(exc)
            self._metrics.model_load_failures.inc()
            logger.exception("model bundle %s failed to load; still serving %s", version, self._set.describe())
            return None
        self._policy.loaded(version)
        self._failures.pop(version, None)
        if model.masks.catalog_version != self._catalog.version:  # catalog moved while loading
            model = await loop.run_in_executor(self._executor, self._refresh_catalog, model, self._catalog)
        self._metrics.model_loads.inc()
        return model

    async def _make_live(self, latest: str, candidates: set[str]) -> bool:
        previous = self._set.live_version
        if latest == previous:
            return False
        model = self._set.models.get(latest)  # a promoted candidate: already loaded and warm
        if model is None:
            if not self._policy.due(latest, previous):
                return False
            model = await self._load_checked(latest)
            if model is None:
                return False
        models = {**self._set.models, latest: model}
        if previous is not None and previous not in candidates:
            models.pop(previous, None)
        self._set = ModelSet(models, latest)
        self._metrics.set_model_version(previous, latest)
        self._metrics.model_items.set(len(model.items.item_ids))
        logger.info("serving model %s", latest,
                    extra={"model_version": latest, "previous": previous, "providers": model.bundle.providers,
                           "scoring": model.plan.describe() if model.plan else None})
        for cb in self._listeners:
            result = cb(model)
            if inspect.isawaitable(result):
                await result
        return True

    async def _add_candidate(self, version: str) -> bool:
        if not self._policy.due(version, None):
            return False
        model = await self._load_checked(version)
        if model is None:
            return False
        self._set = self._set.with_model(model)
        logger.info("candidate model %s loaded", version, extra={"model_version": version, "loaded": self._set.describe()})
        return True

    def _publish_models(self) -> None:
        models = self._set
        sizes = {(v, models.role(v)): model_memory(m).total_bytes for v, m in models.models.items()}
        self._series = self._metrics.set_models(sizes, self._series)

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
        return replace(model, masks=CatalogMasks.build(model.items.item_ids, catalog), catalog=catalog)

    async def rebuild_masks(self) -> None:
        """Bring every loaded model up to the latest catalog (idempotent)."""
        loop = asyncio.get_running_loop()
        while True:
            catalog = self._catalog
            stale = [m for m in self._set.models.values() if m.masks.catalog_version != catalog.version]
            if not stale:
                return
            for model in stale:
                updated = await loop.run_in_executor(self._executor, self._refresh_catalog, model, catalog)
                if self._set.models.get(model.version) is model:  # not replaced or dropped meanwhile
                    self._set = self._set.with_model(updated)
                    if model.version == self._set.live_version:
                        self._metrics.model_items.set(len(updated.items.item_ids))
            self._publish_models()
            live = self._set.live
            logger.info("catalog applied", extra={"catalog_version": catalog.version, "models": len(stale),
                                                  "new_items": len(live.items.new_item_ids) if live else 0})
