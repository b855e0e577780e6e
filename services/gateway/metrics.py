"""The gateway's Prometheus metrics (prefix ``shopstream_gateway_``), created once per process."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from services.common.rpc_metrics import LATENCY_BUCKETS_SECONDS, RpcMetrics, make_rpc_metrics

# Fallback reasons (a closed set, so the label stays low-cardinality).
USER_UNKNOWN = "user_unknown"
RANKER_UNAVAILABLE = "ranker_unavailable"
RANKER_DEADLINE = "ranker_deadline_exceeded"
RANKER_ERROR = "ranker_error"
CLIENT_DEADLINE = "client_deadline_too_short"
PADDED = "padded"


@dataclass(frozen=True)
class GatewayMetrics:
    rpc: RpcMetrics
    fallbacks: Counter
    ranker_latency: Histogram
    ranker_batch_requests: Histogram
    events_tracked: Counter
    rate_limited: Counter


@functools.cache
def gateway_metrics() -> GatewayMetrics:
    """The process-wide set (the default registry refuses duplicates)."""
    return GatewayMetrics(
        rpc=make_rpc_metrics("gateway"),
        fallbacks=Counter(
            "shopstream_gateway_fallbacks_total",
            "Answers served (wholly or partly) from trending, by method and reason",
            ["method", "reason"],
        ),
        ranker_latency=Histogram(
            "shopstream_gateway_ranker_call_duration_seconds",
            "Client-side latency of calls to the ranker, by method and gRPC status code",
            ["method", "code"],
            buckets=LATENCY_BUCKETS_SECONDS,
        ),
        ranker_batch_requests=Histogram(
            "shopstream_gateway_ranker_batch_requests",
            "Rank requests sent together in one RankBatch call to the ranker",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        ),
        events_tracked=Counter(
            "shopstream_gateway_events_tracked_total",
            "Events accepted by TrackEvents and published to Kafka",
        ),
        # client: the name from the token configuration (operator-chosen, bounded), never the token.
        rate_limited=Counter(
            "shopstream_gateway_rate_limited_total",
            "Calls refused with RESOURCE_EXHAUSTED because the client's rate limit was spent, by client and method",
            ["client", "method"],
        ),
    )
