"""Shadow scoring: a running experiment's shadow variant ranks the same request as the answer
that was served, after it, and is compared with it; it is never served.

``maybe_score`` is called once the served answer is built. It returns at once: a sampled
share (``sample_rate``) of requests gets a fire-and-forget task that asks the ranker with
the shadow's model version (through the same RankerClient, so it joins the live RankBatch
calls) and records overlap@k, Spearman and Kendall correlation with the served list and the
shadow call's latency. At most ``max_in_flight`` shadow calls are out at once; beyond that
a request is skipped and counted, so a slow shadow model can never queue up behind
live traffic without bound. Nothing a shadow task does reaches the answer, which the
caller has already built.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence

from shopstream.ranker.v1 import ranker_pb2

from services.common.filters import ItemFilter
from services.experiments.compare import compare
from services.gateway import metrics as m

logger = logging.getLogger(__name__)


class ShadowScorer:
    def __init__(self, ranker, metrics: m.GatewayMetrics, sample_rate: float = 1.0, max_in_flight: int = 64,
                 timeout_s: float = 0.15, rng: Callable[[], float] = random.random) -> None:
        self._ranker = ranker
        self._metrics = metrics
        self._sample_rate = sample_rate
        self._max_in_flight = max_in_flight
        self._timeout_s = timeout_s
        self._rng = rng
        self._tasks: set[asyncio.Task] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def maybe_score(self, user_id: str, k: int, item_filter: ItemFilter, model_version: str,
                    served: Sequence[str], merch=None) -> asyncio.Task | None:
        """Score the request with ``model_version`` in the background (when sampled and a slot
        is free) and compare with ``served``; returns the task, or None when not scored.
        ``merch`` (the request's merchandising, as the served answer had it) fills the request."""
        if self._sample_rate <= 0 or (self._sample_rate < 1 and self._rng() >= self._sample_rate):
            return None
        if len(self._tasks) >= self._max_in_flight:
            self._metrics.shadow_requests.labels(m.SHADOW_BUSY).inc()
            return None
        request = ranker_pb2.RankRequest(user_id=user_id, k=k, filter=item_filter.to_proto(),
                                         model_version=model_version)
        if merch is not None:
            merch.fill(request)
        task = asyncio.create_task(self._score(request, list(served)), name="shadow-score")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _score(self, request: ranker_pb2.RankRequest, served: list[str]) -> None:
        start = time.perf_counter()
        try:
            ranked = await self._ranker.rank(request, self._timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # RankerFailed or a domain error: the shadow's problem only
            self._metrics.shadow_requests.labels(m.SHADOW_FAILED).inc()
            logger.debug("shadow %s: %s", request.model_version, exc)
            return
        finally:
            self._metrics.shadow_latency.observe(time.perf_counter() - start)
        if not ranked.user_known:
            self._metrics.shadow_requests.labels(m.SHADOW_USER_UNKNOWN).inc()
            return
        result = compare(served, [i.item_id for i in ranked.items])
        self._metrics.shadow_requests.labels(m.SHADOW_SCORED).inc()
        self._metrics.shadow_overlap.observe(result.overlap)
        if result.spearman is not None:
            self._metrics.shadow_correlation.labels("spearman").observe(result.spearman)
            self._metrics.shadow_correlation.labels("kendall").observe(result.kendall)

    async def close(self) -> None:
        """Cancel the shadow calls still out (at shutdown, before the ranker client closes)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
