"""The gateway's Prometheus metrics (prefix ``shopstream_gateway_``), created once per process."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from services.common.rpc_metrics import LATENCY_BUCKETS_SECONDS, RpcMetrics, make_rpc_metrics

# Fallback reasons (a closed set, so the label stays low-cardinality).
USER_UNKNOWN = "user_unknown"
RANKER_UNAVAILABLE = "ranker_unavailable"
RANKER_DEADLINE = "ranker_deadline_exceeded"
RANKER_ERROR = "ranker_error"
CLIENT_DEADLINE = "client_deadline_too_short"
PADDED = "padded"

# Impressions dropped, by reason (impressions.py).
BUFFER_FULL = "buffer_full"
PUBLISH_FAILED = "publish_failed"

# Shadow scoring outcomes (shadow.py).
SHADOW_SCORED = "scored"
SHADOW_BUSY = "skipped_busy"
SHADOW_USER_UNKNOWN = "user_unknown"
SHADOW_FAILED = "failed"

_RATIO_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
_CORRELATION_BUCKETS = (-1.0, -0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 1.0)


@dataclass(frozen=True)
class GatewayMetrics:
    rpc: RpcMetrics
    fallbacks: Counter
    ranker_latency: Histogram
    ranker_batch_requests: Histogram
    events_tracked: Counter
    users_forgotten: Counter
    rate_limited: Counter
    # The closed loop (issue 13): impressions, experiment definitions, shadow scoring.
    impressions_published: Counter
    impressions_dropped: Counter
    impressions_buffered: Gauge
    experiment_config_errors: Counter
    shadow_requests: Counter
    shadow_overlap: Histogram
    shadow_correlation: Histogram
    shadow_latency: Histogram
    # The HTTP/JSON API (http_api.py): by route (a fixed path) and gRPC status name, as rpc above.
    http_requests: Counter
    http_latency: Histogram


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
        users_forgotten=Counter(
            "shopstream_gateway_users_forgotten_total",
            "ForgetUser calls that removed a user's state",
        ),
        # client: the name from the token configuration (operator-chosen, bounded), never the token.
        rate_limited=Counter(
            "shopstream_gateway_rate_limited_total",
            "Calls refused with RESOURCE_EXHAUSTED because the client's rate limit was spent, by client and method",
            ["client", "method"],
        ),
        impressions_published=Counter(
            "shopstream_gateway_impressions_published_total",
            "Served lists (impressions) acknowledged by Kafka on the impressions topic",
        ),
        impressions_dropped=Counter(
            "shopstream_gateway_impressions_dropped_total",
            "Served lists not published: the buffer was full, or Kafka refused or did not acknowledge them",
            ["reason"],
        ),
        impressions_buffered=Gauge(
            "shopstream_gateway_impressions_buffered",
            "Served lists waiting in the gateway's buffer for the impressions topic",
        ),
        experiment_config_errors=Counter(
            "shopstream_gateway_experiment_config_errors_total",
            "Experiment definitions refused by the gateway (the previous one of that name stays live), by reason",
            ["reason"],
        ),
        shadow_requests=Counter(
            "shopstream_gateway_shadow_requests_total",
            "Shadow scorings, by outcome (scored, skipped_busy, user_unknown, failed)",
            ["outcome"],
        ),
        shadow_overlap=Histogram(
            "shopstream_gateway_shadow_overlap_ratio",
            "Overlap@k of the shadow variant's list with the served one (k = the served list's length)",
            buckets=_RATIO_BUCKETS,
        ),
        shadow_correlation=Histogram(
            "shopstream_gateway_shadow_rank_correlation",
            "Rank correlation of the shadow variant's order with the served one over the items both hold",
            ["method"],
            buckets=_CORRELATION_BUCKETS,
        ),
        shadow_latency=Histogram(
            "shopstream_gateway_shadow_duration_seconds",
            "Latency of the shadow variant's Rank call (what shadow scoring costs the ranker per request)",
            buckets=LATENCY_BUCKETS_SECONDS,
        ),
        http_requests=Counter(
            "shopstream_gateway_http_requests_total",
            "HTTP/JSON API calls handled, by route and gRPC status code (the HTTP status follows from it)",
            ["route", "code"],
        ),
        http_latency=Histogram(
            "shopstream_gateway_http_duration_seconds",
            "Server-side latency of HTTP/JSON API calls, by route",
            ["route"],
            buckets=LATENCY_BUCKETS_SECONDS,
        ),
    )
