"""GatewayService: the storefront API. Personalised when the ranker answers,
trending (marked degraded) when it does not; a ranker outage is never an error."""
from __future__ import annotations

import asyncio
import inspect
import logging
from concurrent.futures import Executor
from typing import Protocol, Sequence

import grpc
from shopstream.events.v1 import events_pb2
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shopstream.ranker.v1 import ranker_pb2

from services.common.errors import DeadlineExceeded, InvalidArgument, Unavailable
from services.common.filters import ItemFilter
from services.common.stores.user_state import UserStateStore
from services.gateway import metrics as m
from services.gateway import rules
from services.gateway.fallback import TrendingFallback
from services.gateway.ranker_client import RankerClient, RankerFailed
from services.gateway.settings import GatewaySettings
from services.contract.limits import check_id
from services.contract.validation import InvalidEvent, validate_event

logger = logging.getLogger(__name__)

DEGRADED_REASONS = {
    m.RANKER_UNAVAILABLE: "ranker unavailable",
    m.RANKER_DEADLINE: "ranker deadline exceeded",
    m.RANKER_ERROR: "ranker error",
    m.CLIENT_DEADLINE: "client deadline too short for the ranker",
}


class EventPublisher(Protocol):
    """Where TrackEvents puts accepted events; blocking, so it is called in the executor."""

    def send_events(self, events: Sequence[events_pb2.Event], wait: bool = True) -> int: ...

    def close(self) -> None:
        """Called once, at shutdown."""


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        settings: GatewaySettings,
        ranker: RankerClient,
        user_states: UserStateStore,
        fallback: TrendingFallback,
        publisher: EventPublisher,
        executor: Executor,
        metrics: m.GatewayMetrics,
    ) -> None:
        self._s = settings
        self._ranker = ranker
        self._states = user_states
        self._fallback = fallback
        self._publisher = publisher
        self._executor = executor
        self._metrics = metrics

    # -- ranker calls --------------------------------------------------------

    def _ranker_timeout(self, context: grpc.aio.ServicerContext) -> float:
        """The ranker gets the smaller of its own bound and the client's deadline less a margin
        kept for the fallback path."""
        timeout = self._s.ranker_timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, remaining - self._s.deadline_margin_s)
        return timeout

    # -- Recommend -------------------------------------------------------------

    async def Recommend(self, request: gateway_pb2.RecommendRequest, context) -> gateway_pb2.RecommendResponse:
        user_id = check_id("user_id", request.user_id)
        k = rules.resolve_k(request.k, self._s.default_k, self._s.max_k)
        item_filter = rules.item_filter(request.filters, self._s.max_exclude_ids)
        try:
            ranked = await self._ranker.rank(
                ranker_pb2.RankRequest(user_id=user_id, k=k, filter=item_filter.to_proto()),
                self._ranker_timeout(context))
        except RankerFailed as failed:
            return await self._trending(user_id, k, item_filter, failed.reason, context=context)
        if not ranked.user_known:
            return await self._trending(user_id, k, item_filter, m.USER_UNKNOWN, model_version=ranked.model_version,
                                        context=context)
        items = [gateway_pb2.RecommendedItem(item_id=i.item_id, score=i.score) for i in ranked.items]
        if len(items) < k:  # the filters left the model short: pad from trending
            self._metrics.fallbacks.labels("Recommend", m.PADDED).inc()
            excluded = await self._user_exclusions(user_id, item_filter, context)
            excluded.update(i.item_id for i in items)
            base = min((i.score for i in items), default=0.0)
            padding = await self._store_call(self._fallback.recommend(k - len(items), item_filter, excluded),
                                             context, "recommendations unavailable")
            for rank, (item_id, _) in enumerate(padding, start=1):  # below every ranked item
                items.append(gateway_pb2.RecommendedItem(item_id=item_id, score=base - rank * 1e-3))
        return gateway_pb2.RecommendResponse(items=items, strategy=gateway_pb2.STRATEGY_PERSONALIZED,
                                             model_version=ranked.model_version)

    def _store_timeout(self, context) -> tuple[float, bool]:
        """Redis calls get the smaller of their own bound and what the client has left; the
        flag says which one it is (True: the client's deadline)."""
        timeout = self._s.redis_timeout_s
        remaining = context.time_remaining() if context is not None else None
        if remaining is not None and remaining < timeout:
            return max(0.0, remaining), True
        return timeout, False

    async def _store_call(self, awaitable, context, unavailable: str):
        """Await a store read under a deadline. Running out of the client's own deadline is
        DEADLINE_EXCEEDED (the store may be fine); any other failure is UNAVAILABLE (retryable)."""
        timeout, client_bound = self._store_timeout(context)
        if client_bound and timeout <= 0:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise DeadlineExceeded("the client's deadline passed before the answer was ready")
        try:
            async with asyncio.timeout(timeout):
                return await awaitable
        except TimeoutError:
            if client_bound:
                raise DeadlineExceeded("the client's deadline passed before the answer was ready") from None
            logger.warning("%s: no answer within %.3f s", unavailable, timeout)
            raise Unavailable(unavailable) from None
        except Exception as exc:  # RedisError, OSError
            logger.warning("%s: %s", unavailable, exc or type(exc).__name__)
            raise Unavailable(unavailable) from None

    async def _user_exclusions(self, user_id: str, item_filter: ItemFilter, context=None,
                               user_known: bool = True) -> set[str]:
        """Explicit excludes plus the user's seen / purchased items: one pipelined read, or none
        when no rule needs the user's state or the ranker already said the user has none."""
        if not user_known or not (item_filter.exclude_purchased or item_filter.exclude_seen):
            return set(item_filter.exclude_item_ids)
        (state,) = await self._store_call(
            self._states.get_states([user_id], self._s.history_len, with_embedding=False),
            context, "user state store unavailable")
        return item_filter.user_exclusions(state.history, state.purchased)

    async def _trending(self, user_id: str, k: int, item_filter: ItemFilter, reason: str,
                        model_version: str = "", context=None) -> gateway_pb2.RecommendResponse:
        self._metrics.fallbacks.labels("Recommend", reason).inc()
        # The ranker found no history for an unknown user, so there is nothing of theirs to exclude.
        excluded = await self._user_exclusions(user_id, item_filter, context, user_known=reason != m.USER_UNKNOWN)
        picked = await self._store_call(self._fallback.recommend(k, item_filter, excluded), context,
                                        "recommendations unavailable")
        degraded_reason = DEGRADED_REASONS.get(reason, "")
        return gateway_pb2.RecommendResponse(
            items=[gateway_pb2.RecommendedItem(item_id=i, score=s) for i, s in picked],
            strategy=gateway_pb2.STRATEGY_TRENDING,
            model_version=model_version,
            degraded=bool(degraded_reason),
            degraded_reason=degraded_reason,
        )

    # -- SimilarItems ------------------------------------------------------------

    async def SimilarItems(self, request: gateway_pb2.SimilarItemsRequest, context) -> gateway_pb2.SimilarItemsResponse:
        item_id = check_id("item_id", request.item_id)
        k = rules.resolve_k(request.k, self._s.default_k, self._s.max_k)
        item_filter = rules.item_filter(request.filters, self._s.max_exclude_ids)
        try:
            similar = await self._ranker.similar(
                ranker_pb2.SimilarRequest(item_id=item_id, k=k, filter=item_filter.to_proto()),
                self._ranker_timeout(context))
        except RankerFailed as failed:
            self._metrics.fallbacks.labels("SimilarItems", failed.reason).inc()
            category = self._fallback.category_of(item_id)
            same_category = ItemFilter(
                include_categories=frozenset({category}) if category else item_filter.include_categories,
                exclude_categories=item_filter.exclude_categories,
                exclude_item_ids=item_filter.exclude_item_ids,
                in_stock_only=item_filter.in_stock_only,
            )
            picked = await self._store_call(self._fallback.recommend(k, same_category, {item_id}), context,
                                            "similar items unavailable")
            return gateway_pb2.SimilarItemsResponse(
                items=[gateway_pb2.RecommendedItem(item_id=i, score=s) for i, s in picked],
                degraded=True, degraded_reason=DEGRADED_REASONS[failed.reason])
        return gateway_pb2.SimilarItemsResponse(
            items=[gateway_pb2.RecommendedItem(item_id=i.item_id, score=i.score) for i in similar.items],
            model_version=similar.model_version)

    # -- TrackEvents -------------------------------------------------------------

    async def TrackEvents(self, request: gateway_pb2.TrackEventsRequest, context) -> gateway_pb2.TrackEventsResponse:
        events = list(request.events)
        if len(events) > self._s.max_events_per_request:
            raise InvalidArgument(f"at most {self._s.max_events_per_request} events per request, got {len(events)}")
        for i, event in enumerate(events):  # all or nothing: validate before publishing any
            try:
                validate_event(event, max_future_skew_s=self._s.max_event_skew_s)
            except InvalidEvent as exc:
                raise InvalidArgument(f"events[{i}] is invalid ({exc.reason}): {exc.message}") from None
        if not events:
            return gateway_pb2.TrackEventsResponse(accepted=0)
        loop = asyncio.get_running_loop()
        try:
            accepted = await loop.run_in_executor(self._executor, self._publisher.send_events, events)
        except InvalidEvent as exc:
            raise InvalidArgument(f"invalid event: {exc.reason}") from None
        except Exception as exc:
            logger.warning("publishing %d events failed: %s", len(events), exc)
            raise Unavailable("event log unavailable, retry later") from None
        self._metrics.events_tracked.inc(accepted)
        return gateway_pb2.TrackEventsResponse(accepted=accepted)
