"""RankerService: Rank (personalised top-k), RankBatch (many Rank requests in one call),
Similar (item-to-item cosine) and ListModels (the loaded versions and their memory).

Rank, RankBatch's requests and Similar each name the model version that scores them
(``model_version``; "" = the live one); a version that is not loaded is FAILED_PRECONDITION
naming it and the loaded ones, never a silent fallback to another model."""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Sequence

import grpc
from google.rpc import status_pb2
import numpy as np
from shopstream.ranker.v1 import ranker_pb2, ranker_pb2_grpc

from services.common.errors import (DomainError, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted,
                                    Unavailable)
from services.common.filters import ItemFilter
from services.contract.limits import check_filter, check_id
from services.common.stores.coalescing import CoalescingStateReader
from services.common.stores.user_state import UserState, UserStateStore
from services.common.batching import MicroBatcher
from services.ranker.engine import RankEngine, Ranked, RankJob
from services.ranker.metrics import RankerMetrics
from services.ranker.memory import model_memory
from services.ranker.model_holder import LoadedModel, ModelHolder, ModelSet
from services.common.filters import eligible_mask
from services.ranker.scoring import top_k
from services.rules.merchandising import Merchandising, from_rank_request

logger = logging.getLogger(__name__)


def _scored(model: LoadedModel, indices: np.ndarray, scores: np.ndarray) -> list[ranker_pb2.ScoredItem]:
    ids = model.items.item_ids
    return [ranker_pb2.ScoredItem(item_id=ids[i - 1], score=float(s)) for i, s in zip(indices.tolist(), scores.tolist())]


def _ranked_items(model: LoadedModel, ranked: Ranked) -> list[ranker_pb2.ScoredItem]:
    """Scored items with their evidence (the explaining history item) and new-arrival flag."""
    items = _scored(model, ranked.indices, ranked.scores)
    if ranked.evidence is None:
        return items
    ids, trained = model.items.item_ids, model.items.num_trained
    for item, index, cited, strength in zip(items, ranked.indices.tolist(), ranked.evidence.tolist(),
                                            ranked.strength.tolist()):
        item.new_arrival = index > trained
        if cited > 0:
            item.reason_item_id, item.reason_strength = ids[cited - 1], strength
    return items


def _error_outcome(exc: BaseException) -> ranker_pb2.RankOutcome:
    """The status Rank would have returned for this error, as one RankBatch outcome."""
    if isinstance(exc, DomainError):
        return ranker_pb2.RankOutcome(error=status_pb2.Status(code=exc.code.value[0], message=exc.message))
    logger.error("unhandled error in RankBatch item", exc_info=exc)
    return ranker_pb2.RankOutcome(error=status_pb2.Status(code=grpc.StatusCode.INTERNAL.value[0],
                                                          message="internal error"))


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
        max_batch_requests: int = 256,
        batcher: MicroBatcher[RankJob, Ranked] | None = None,
    ) -> None:
        """``batcher`` runs Rank's scoring; by default a micro-batcher with default limits."""
        self._holder = holder
        self._states = CoalescingStateReader(user_states, history_len)
        self._executor = executor
        self._metrics = metrics
        self._max_k = max_k
        self._max_batch_requests = max_batch_requests
        self._batcher = batcher or MicroBatcher(RankEngine(), executor, name="ranker")

    def _validate(self, field: str, value: str, k: int) -> None:
        check_id(field, value)
        if not 1 <= k <= self._max_k:
            raise InvalidArgument(f"k must be between 1 and {self._max_k}, got {k}")

    def _checked_filter(self, request: ranker_pb2.RankRequest) -> tuple[ItemFilter, Merchandising | None]:
        self._validate("user_id", request.user_id, request.k)
        check_filter("filter", request.filter)
        if request.model_version:
            check_id("model_version", request.model_version)
        return ItemFilter.from_proto(request.filter), from_rank_request(request)

    def _model(self, models: ModelSet, version: str) -> LoadedModel:
        """``version``'s model in ``models`` ("" = the live one)."""
        model = models.get(version)
        if model is not None:
            return model
        if not version or not models.models:
            raise Unavailable("no model loaded yet")
        why = self._holder.not_loaded().get(version)
        raise FailedPrecondition(f"model version {version!r} is not loaded{f' ({why})' if why else ''}; "
                                 f"loaded: {models.describe()}")

    async def _read_states(self, user_ids: Sequence[str]) -> list[UserState]:
        try:
            return await self._states.get_many(user_ids)
        except Exception as exc:  # RedisError, OSError, TimeoutError
            logger.warning("user state read failed: %s", exc or type(exc).__name__)
            raise Unavailable("user state store unavailable") from None

    def _job(self, model: LoadedModel, request: ranker_pb2.RankRequest, item_filter: ItemFilter,
             merch: Merchandising | None, state: UserState) -> tuple[RankJob | None, str]:
        """The scoring job for a known user and where its vector comes from; (None, "") if unknown."""
        if not state.known:
            return None, ""
        stored = state.embedding_for(model.version)
        if stored is not None and stored.shape != (model.bundle.dim,):
            stored = None
        source = "redis" if stored is not None else "encoded"
        self._metrics.embedding_source.labels(source).inc()
        return RankJob(model, state.history, state.purchased, stored, item_filter, request.k, merch), source

    @staticmethod
    def _response(model: LoadedModel, ranked: Ranked | None, source: str) -> ranker_pb2.RankResponse:
        if ranked is None:
            return ranker_pb2.RankResponse(model_version=model.version, user_known=False)
        return ranker_pb2.RankResponse(items=_ranked_items(model, ranked),
                                       model_version=model.version, user_known=True, embedding_source=source)

    async def Rank(self, request: ranker_pb2.RankRequest, context) -> ranker_pb2.RankResponse:
        item_filter, merch = self._checked_filter(request)
        model = self._model(self._holder.models, request.model_version)
        (state,) = await self._read_states([request.user_id])
        job, source = self._job(model, request, item_filter, merch, state)
        if job is None:
            return self._response(model, None, source)
        try:
            ranked = await self._batcher.submit(job)
        except ResourceExhausted:
            self._metrics.queue_rejected.inc()
            raise
        return self._response(model, ranked, source)

    async def RankBatch(self, request: ranker_pb2.RankBatchRequest, context) -> ranker_pb2.RankBatchResponse:
        """Every request as Rank would answer it; the states come in one round trip and the
        jobs join the micro-batcher together. An invalid request, or one naming a version that
        is not loaded, fails only its own outcome; each request is scored by the version it
        names (the engine batches per model)."""
        requests = request.requests
        if len(requests) > self._max_batch_requests:
            raise InvalidArgument(f"at most {self._max_batch_requests} requests per RankBatch, got {len(requests)}")
        models = self._holder.models  # one view of the loaded models for the whole call
        if models.live is None and not models.models:
            raise Unavailable("no model loaded yet")
        outcomes: list[ranker_pb2.RankOutcome | None] = [None] * len(requests)
        valid: list[tuple[int, ranker_pb2.RankRequest, tuple[ItemFilter, Merchandising | None], LoadedModel]] = []
        for i, req in enumerate(requests):
            try:
                checked = self._checked_filter(req)
                valid.append((i, req, checked, self._model(models, req.model_version)))
            except DomainError as exc:
                outcomes[i] = _error_outcome(exc)
        states = await self._read_states([req.user_id for _, req, _, _ in valid]) if valid else []
        jobs: list[RankJob] = []
        slots: list[tuple[int, str]] = []
        for (i, req, (item_filter, merch), model), state in zip(valid, states):
            job, source = self._job(model, req, item_filter, merch, state)
            if job is None:
                outcomes[i] = ranker_pb2.RankOutcome(response=self._response(model, None, source))
            else:
                jobs.append(job)
                slots.append((i, source))
        results = await asyncio.gather(*self._batcher.submit_many(jobs), return_exceptions=True)
        for (i, source), job, result in zip(slots, jobs, results):
            if isinstance(result, BaseException):
                if isinstance(result, ResourceExhausted):
                    self._metrics.queue_rejected.inc()
                outcomes[i] = _error_outcome(result)
            else:
                outcomes[i] = ranker_pb2.RankOutcome(response=self._response(job.model, result, source))
        return ranker_pb2.RankBatchResponse(results=outcomes)

    async def Similar(self, request: ranker_pb2.SimilarRequest, context) -> ranker_pb2.SimilarResponse:
        self._validate("item_id", request.item_id, request.k)
        check_filter("filter", request.filter)
        if request.model_version:
            check_id("model_version", request.model_version)
        model = self._model(self._holder.models, request.model_version)
        index = model.items.index_of.get(request.item_id)
        if index is None:
            raise NotFound(f"item {request.item_id!r} is not in model {model.version}")
        item_filter = ItemFilter.from_proto(request.filter)
        loop = asyncio.get_running_loop()
        items = await loop.run_in_executor(self._executor, self._similar, model, index, item_filter, request.k)
        return ranker_pb2.SimilarResponse(items=items, model_version=model.version)

    async def ListModels(self, request: ranker_pb2.ListModelsRequest, context) -> ranker_pb2.ListModelsResponse:
        """Every loaded version (live first) with its catalog size and memory, and the named
        versions that are not loaded with the reason."""
        models = self._holder.models
        infos = []
        for version in sorted(models.models, key=lambda v: (v != models.live_version, v)):
            model = models.models[version]
            memory = model_memory(model)
            infos.append(ranker_pb2.ModelInfo(
                version=version, live=version == models.live_version, catalog_items=len(model.items.item_ids),
                embedding_bytes=memory.embedding_bytes, session_bytes=memory.session_bytes,
                total_bytes=memory.total_bytes))
        not_loaded = [ranker_pb2.UnloadedModel(version=v, reason=why)
                      for v, why in sorted(self._holder.not_loaded().items())]
        return ranker_pb2.ListModelsResponse(models=infos, not_loaded=not_loaded, max_models=self._holder.max_models)

    def _similar(self, model: LoadedModel, index: int, item_filter: ItemFilter, k: int) -> list[ranker_pb2.ScoredItem]:
        start = time.perf_counter()
        mask = eligible_mask(model.masks, model.items.index_of, item_filter)
        mask[index] = False
        scores = model.unit_embeddings @ model.unit_embeddings[index]
        indices, top = top_k(scores, mask, k)
        self._metrics.scoring_latency.labels("Similar").observe(time.perf_counter() - start)
        return _scored(model, indices, top)
