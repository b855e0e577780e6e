"""RPC metrics every gRPC service exports; each service's metrics.py creates its own set once."""
from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Histogram

# Around the serving SLO: most answers within 5-50 ms, deadlines at 100-300 ms.
LATENCY_BUCKETS_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class RpcMetrics:
    requests: Counter
    latency: Histogram


def make_rpc_metrics(service: str) -> RpcMetrics:
    return RpcMetrics(
        requests=Counter(
            f"shopstream_{service}_rpc_requests_total",
            "RPCs handled, by method and gRPC status code",
            ["method", "code"],
        ),
        latency=Histogram(
            f"shopstream_{service}_rpc_duration_seconds",
            "Server-side RPC latency",
            ["method"],
            buckets=LATENCY_BUCKETS_SECONDS,
        ),
    )
