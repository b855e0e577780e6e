"""GatewayService: the storefront API. Personalised when the ranker answers,
trending (marked degraded) when it does not; a ranker outage is never an error.

Every answer has an identity (``recommendation_id``), says what served it (``variant``: a
model version or "trending" / "similar-trending"; inside an experiment, the name of the
user's variant) and is published as an impression (impressions.py). A running experiment
(docs/experiments.md) decides per user which variant serves; its shadow variant is scored
beside the answer (shadow.py) and never changes it.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from concurrent.futures import Executor
from typing import Protocol, Sequence

import grpc
from shopstream.events.v1 import events_pb2
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shopstream.ranker.v1 import ranker_pb2

from services.common.errors import DeadlineExceeded, InvalidArgument, Unavailable
from services.common.filters import ItemFilter
from services.common.stores.user_state import UserStateStore
from services.experiments.definition import TRENDING
from services.experiments.store import ExperimentWatcher, Live
from services.gateway import merchandising_options, reasons
from services.gateway import metrics as m
from services.gateway import rules
from services.gateway.fallback import TrendingFallback
from services.gateway.impressions import ImpressionLog, impression_of
from services.gateway.ranker_client import RankerClient, RankerFailed
from services.gateway.shadow import ShadowScorer
from services.gateway.settings import GatewaySettings
from services.contract.limits import check_id
from services.rules.evaluate import Interactions
from services.rules.merchandising import Merchandising
from services.rules.registry import FilterRegistry
from services.contract.validation import InvalidEvent, validate_event

logger = logging.getLogger(__name__)

DEGRADED_REASONS = {
    m.RANKER_UNAVAILABLE: "ranker unavailable",
    m.RANKER_DEADLINE: "ranker deadline exceeded",
    m.RANKER_ERROR: "ranker error",
    m.CLIENT_DEADLINE: "client deadline too short for the ranker",
}

# What served an answer when no model did (Impression.variant / RecommendResponse.variant).
TRENDING_VARIANT = "trending"
SIMILAR_TRENDING_VARIANT = "similar-trending"
SURFACE_RECOMMEND = "recommend"
SURFACE_SIMILAR = "similar"
_NO_EXPERIMENTS = Live()


def new_recommendation_id() -> str:
    """Unique per answer: 128 random bits, hex (32 characters)."""
    return uuid.uuid4().hex


class EventPublisher(Protocol):
    """Where TrackEvents puts accepted events; blocking, so it is called in the executor."""

    def send_events(self, events: Sequence[events_pb2.Event], wait: bool = True) -> int: ...

    def send_impressions(self, impressions: Sequence[events_pb2.Impression], wait: bool = True) -> int:
        """Served lists to the impressions topic (impressions.py drains its buffer through it)."""
        ...

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
        *,
        impressions: ImpressionLog | None = None,
        experiments: ExperimentWatcher | None = None,
        shadow: ShadowScorer | None = None,
        filters: FilterRegistry | None = None,
    ) -> None:
        self._s = settings
        self._ranker = ranker
        self._states = user_states
        self._fallback = fallback
        self._publisher = publisher
        self._executor = executor
        self._metrics = metrics
        self._impressions = impressions
        self._experiments = experiments
        self._shadow = shadow
        self._filters = filters

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
        merch, pins = await merchandising_options.from_request(request, k, self._filters)
        personalize = request.personalize if request.HasField("personalize") else True
        live = self._experiments.live if self._experiments is not None else _NO_EXPERIMENTS
        arm = live.assigner.assign(user_id) if live.assigner is not None and personalize else None
        if not personalize:  # nothing about the user is read, scored, assigned or logged
            resp = await self._trending(user_id, k, item_filter, None, context=context, merch=merch,
                                        anonymous=True)
            resp.variant = TRENDING_VARIANT
        elif arm is not None:  # the user's variant of the running experiment serves
            if arm.kind == TRENDING:
                resp = await self._trending(user_id, k, item_filter, None, context=context, merch=merch)
            else:
                resp = await self._personalized(user_id, k, item_filter, arm.model_version, context, merch)
            resp.variant, resp.experiment = arm.name, live.experiment.name
        elif live.default is not None and live.default.kind == TRENDING:  # trending won an experiment
            resp = await self._trending(user_id, k, item_filter, None, context=context, merch=merch)
            resp.variant = TRENDING_VARIANT
        else:  # the ranker's live model (a promoted model variant was made live at the ranker: LATEST)
            resp = await self._personalized(user_id, k, item_filter, "", context, merch)
            resp.variant = (resp.model_version if resp.strategy == gateway_pb2.STRATEGY_PERSONALIZED
                            else TRENDING_VARIANT)
        if pins:
            excluded, interactions = await self._user_context(
                user_id, item_filter, merch, context, user_known=personalize)
            pinned = merchandising_options.apply_pins(list(resp.items), pins, k, self._fallback.catalog(), item_filter,
                                            excluded, merch, interactions)
            del resp.items[:]
            resp.items.extend(pinned)
        resp.recommendation_id = new_recommendation_id()
        self._log_impression(resp, user_id if personalize else "", SURFACE_RECOMMEND)
        shadow = live.experiment.shadow if live.experiment is not None else None
        if shadow is not None and self._shadow is not None and not resp.degraded and personalize:
            self._shadow.maybe_score(user_id, k, item_filter, shadow.model_version,
                                     [i.item_id for i in resp.items], merch)
        return resp

    async def _personalized(self, user_id: str, k: int, item_filter: ItemFilter, model_version: str,
                            context, merch: Merchandising | None = None) -> gateway_pb2.RecommendResponse:
        """The ranker's answer with ``model_version`` ("" = its live model), padded from trending
        when the filters left it short; trending when the ranker cannot answer or does not know
        the user. ``merch`` (filter expression, boosts, diversity) travels to the ranker."""
        request = ranker_pb2.RankRequest(user_id=user_id, k=k, filter=item_filter.to_proto(),
                                         model_version=model_version)
        if merch is not None:
            merch.fill(request)
        try:
            ranked = await self._ranker.rank(request, self._ranker_timeout(context))
        except RankerFailed as failed:
            return await self._trending(user_id, k, item_filter, failed.reason, context=context, merch=merch)
        if not ranked.user_known:
            return await self._trending(user_id, k, item_filter, m.USER_UNKNOWN, model_version=ranked.model_version,
                                        context=context, merch=merch)
        catalog = self._fallback.catalog()
        items = [gateway_pb2.RecommendedItem(item_id=i.item_id, score=i.score,
                                             reason=reasons.personalized(i, catalog)) for i in ranked.items]
        if len(items) < k:  # the filters left the model short: pad from trending
            self._metrics.fallbacks.labels("Recommend", m.PADDED).inc()
            excluded, interactions = await self._user_context(user_id, item_filter, merch, context)
            excluded.update(i.item_id for i in items)
            base = min((i.score for i in items), default=0.0)
            padding = await self._store_call(
                self._fallback.recommend(k - len(items), item_filter, excluded, merch, interactions),
                context, "recommendations unavailable")
            for rank, (item_id, _) in enumerate(padding, start=1):  # below every ranked item
                items.append(gateway_pb2.RecommendedItem(item_id=item_id, score=base - rank * 1e-3,
                                                         reason=reasons.filler()))
        return gateway_pb2.RecommendResponse(items=items, strategy=gateway_pb2.STRATEGY_PERSONALIZED,
                                             model_version=ranked.model_version)

    def _log_impression(self, resp, user_id: str, surface: str) -> None:
        """Hand the served list to the impression log (never blocks; a full buffer drops and counts)."""
        if self._impressions is not None:
            self._impressions.offer(impression_of(resp, user_id, surface))

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

    async def _user_context(self, user_id: str, item_filter: ItemFilter, merch: Merchandising | None,
                            context=None, user_known: bool = True) -> tuple[set[str], Interactions]:
        """Explicit excludes plus the user's seen / purchased items, and what a filter expression's
        ``Interactions`` see: one pipelined read, or none when no rule needs the user's state or
        the ranker already said the user has none."""
        needs_state = item_filter.exclude_purchased or item_filter.exclude_seen or (
            merch is not None and merch.expression is not None)
        if not user_known or not needs_state:
            return set(item_filter.exclude_item_ids), Interactions()
        (state,) = await self._store_call(
            self._states.get_states([user_id], self._s.history_len, with_embedding=False),
            context, "user state store unavailable")
        return (item_filter.user_exclusions(state.history, state.purchased),
                Interactions(state.history, state.purchased))

    async def _trending(self, user_id: str, k: int, item_filter: ItemFilter, reason: str | None,
                        model_version: str = "", context=None, merch: Merchandising | None = None,
                        anonymous: bool = False) -> gateway_pb2.RecommendResponse:
        """Trending for the user; ``reason`` is why it is a fallback (None: trending was chosen,
        by an experiment, a promotion or personalize=false, so it is neither a fallback nor
        degraded). ``anonymous``: read nothing about the user."""
        if reason is not None:
            self._metrics.fallbacks.labels("Recommend", reason).inc()
        # The ranker found no history for an unknown user, so there is nothing of theirs to exclude.
        excluded, interactions = await self._user_context(
            user_id, item_filter, merch, context, user_known=reason != m.USER_UNKNOWN and not anonymous)
        picked = await self._store_call(self._fallback.recommend(k, item_filter, excluded, merch, interactions),
                                        context, "recommendations unavailable")
        degraded_reason = DEGRADED_REASONS.get(reason, "") if reason is not None else ""
        catalog = self._fallback.catalog()
        return gateway_pb2.RecommendResponse(
            items=[gateway_pb2.RecommendedItem(item_id=i, score=s,
                                               reason=reasons.trending(i, catalog) if s > 0 else reasons.filler())
                   for i, s in picked],
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
            catalog = self._fallback.catalog()
            resp = gateway_pb2.SimilarItemsResponse(
                items=[gateway_pb2.RecommendedItem(item_id=i, score=s, reason=reasons.trending(i, catalog))
                       for i, s in picked],
                degraded=True, degraded_reason=DEGRADED_REASONS[failed.reason], variant=SIMILAR_TRENDING_VARIANT)
        else:
            reason = reasons.similar_to(item_id, self._fallback.catalog())
            resp = gateway_pb2.SimilarItemsResponse(
                items=[gateway_pb2.RecommendedItem(item_id=i.item_id, score=i.score, reason=reason)
                       for i in similar.items],
                model_version=similar.model_version, variant=similar.model_version)
        resp.recommendation_id = new_recommendation_id()
        self._log_impression(resp, "", SURFACE_SIMILAR)  # SimilarItems has no user
        return resp

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
