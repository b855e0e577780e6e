"""Batched refresh of user embeddings after their history changed.

Per batch: one ``get_states`` pipeline, one ``bundle.encode`` call in the
executor (never on the event loop), one ``put_embeddings`` pipeline. Each
embedding records the ``hist_version`` it was computed from, so the ranker can
tell a stale one from a current one.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor

from services.common.stores.user_state import EmbeddingWrite, UserStateStore
from services.features.metrics import FeaturesMetrics
from services.features.models import ModelHolder

logger = logging.getLogger(__name__)


class EmbeddingRefresher:
    def __init__(self, store: UserStateStore, models: ModelHolder, executor: Executor,
                 metrics: FeaturesMetrics) -> None:
        self._store = store
        self._models = models
        self._executor = executor
        self._metrics = metrics

    async def refresh(self, user_ids: Sequence[str]) -> int:
        """Re-encode these users with the current model; 0 when no model is loaded yet."""
        bundle = self._models.bundle
        if bundle is None or not user_ids:
            return 0
        started = time.perf_counter()
        states = await self._store.get_states(user_ids, bundle.max_len)
        histories = [s.history for s in states]
        vectors = await asyncio.get_running_loop().run_in_executor(self._executor, bundle.encode, histories)
        await self._store.put_embeddings([
            EmbeddingWrite(user_id=s.user_id, model_version=bundle.version, hist_version=s.hist_version,
                           vector=vectors[i])
            for i, s in enumerate(states)
        ])
        self._metrics.embedding_refresh.observe(time.perf_counter() - started)
        self._metrics.embeddings_written.inc(len(states))
        return len(states)
