"""RankerService: Rank (personalised top-k) and Similar (item-to-item cosine)."""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor

import numpy as np
from shopstream.ranker.v1 import ranker_pb2, ranker_pb2_grpc

from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.common.filters import ItemFilter
from services.common.stores.coalescing import CoalescingStateReader
from services.common.stores.user_state import UserStateStore
from services.ranker.batcher import MicroBatcher
from services.ranker.engine import RankEngine, Ranked, RankJob
from services.common.errors import ResourceExhausted
from services.ranker.metrics import RankerMetrics
from services.ranker.model_holder import LoadedModel, ModelHolder
from services.ranker.scoring import eligible_mask, top_k

logger = logging.getLogger(__name__)

MAX_ID_LEN = 256


def _scored(model: LoadedModel, indices: np.ndarray, scores: np.ndarray) -> list[ranker_pb2.ScoredItem]:
    ids = model.items.item_ids
    return [ranker_pb2.ScoredItem(item_id=ids[i - 1], score=float(s)) for i, s in zip(indices.tolist(), scores.tolist())]


class RankerServicer(ranker_pb2_grpc.RankerServiceServicer):
    def __init__(
        self,
        holder: ModelHolder,
        user_states: UserStateStore,
        executor: Executor,
        metrics: RankerMetrics,
        *,
        max_k: int,
        history_len: int,
        batcher: MicroBatcher[RankJob, Ranked] | None = None,
    ) -> None:
        """``batcher`` runs Rank's scoring; by default a micro-batcher with default limits."""
        self._holder = holder
        self._states = CoalescingStateReader(user_states, history_len)
        self._executor = executor
        self._metrics = metrics
        self._max_k = max_k
        self._batcher = batcher or MicroBatcher(RankEngine(), executor)

    def _validate(self, field: str, value: str, k: int) -> None:
        if not value:
            raise InvalidArgument(f"{field} is required")
        if len(value) > MAX_ID_LEN:
            raise InvalidArgument(f"{field} is longer than {MAX_ID_LEN} characters")
        if not 1 <= k <= self._max_k:
            raise InvalidArgument(f"k must be between 1 and {self._max_k}, got {k}")

    def _model(self) -> LoadedModel:
        model = self._holder.current
        if model is None:
            raise Unavailable("no model loaded yet")
        return model

    async def Rank(self, request: ranker_pb2.RankRequest, context) -> ranker_pb2.RankResponse:
        self._validate("user_id", request.user_id, request.k)
        item_filter = ItemFilter.from_proto(request.filter)
        model = self._model()
        state = await self._states.get(request.user_id)
        if not state.known:
            return ranker_pb2.RankResponse(model_version=model.version, user_known=False)
        stored = state.embedding_for(model.version)
        if stored is not None and stored.shape != (model.bundle.dim,):
            stored = None
        source = "redis" if stored is not None else "encoded"
        self._metrics.embedding_source.labels(source).inc()
        job = RankJob(model, state.history, state.purchased, stored, item_filter, request.k)
        try:
            ranked = await self._batcher.submit(job)
        except ResourceExhausted:
            self._metrics.queue_rejected.inc()
            raise
        return ranker_pb2.RankResponse(items=_scored(model, ranked.indices, ranked.scores),
                                       model_version=model.version, user_known=True, embedding_source=source)

    async def Similar(self, request: ranker_pb2.SimilarRequest, context) -> ranker_pb2.SimilarResponse:
        self._validate("item_id", request.item_id, request.k)
        model = self._model()
        index = model.items.index_of.get(request.item_id)
        if index is None:
            raise NotFound(f"item {request.item_id!r} is not in model {model.version}")
        item_filter = ItemFilter.from_proto(request.filter)
        loop = asyncio.get_running_loop()
        items = await loop.run_in_executor(self._executor, self._similar, model, index, item_filter, request.k)
        return ranker_pb2.SimilarResponse(items=items, model_version=model.version)

    def _similar(self, model: LoadedModel, index: int, item_filter: ItemFilter, k: int) -> list[ranker_pb2.ScoredItem]:
        start = time.perf_counter()
        mask = eligible_mask(model.masks, model.items.index_of, item_filter)
        mask[index] = False
        scores = model.unit_embeddings @ model.unit_embeddings[index]
        indices, top = top_k(scores, mask, k)
        self._metrics.scoring_latency.labels("Similar").observe(time.perf_counter() - start)
        return _scored(model, indices, top)
