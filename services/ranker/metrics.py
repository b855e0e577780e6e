"""The ranker's Prometheus metrics (prefix ``shopstream_ranker_``), created once per process."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from services.common.rpc_metrics import RpcMetrics, make_rpc_metrics

# Scoring alone should stay well under the 50 ms serving budget.
SCORING_BUCKETS_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


@dataclass(frozen=True)
class RankerMetrics:
    rpc: RpcMetrics
    model_info: Gauge
    model_load_failures: Counter
    model_loads: Counter
    scoring_latency: Histogram
    embedding_source: Counter
    catalog_items: Gauge
    model_items: Gauge

    def set_model_version(self, old: str | None, new: str) -> None:
        if old:
            self.model_info.remove(old)
        self.model_info.labels(new).set(1)


@functools.cache
def ranker_metrics() -> RankerMetrics:
    """The process-wide set (the default registry refuses duplicates)."""
    return RankerMetrics(
        rpc=make_rpc_metrics("ranker"),
        model_info=Gauge("shopstream_ranker_model_info", "1 for the model version being served", ["version"]),
        model_load_failures=Counter("shopstream_ranker_model_load_failures_total", "Bundles that failed to load or warm up"),
        model_loads=Counter("shopstream_ranker_model_loads_total", "Bundles loaded and swapped in"),
        scoring_latency=Histogram(
            "shopstream_ranker_scoring_duration_seconds",
            "Encoding plus scoring time per request, in the executor",
            ["method"],
            buckets=SCORING_BUCKETS_SECONDS,
        ),
        embedding_source=Counter(
            "shopstream_ranker_embedding_source_total",
            "Rank requests by where the user vector came from (redis, encoded)",
            ["source"],
        ),
        catalog_items=Gauge("shopstream_ranker_catalog_items", "Items in the catalog snapshot"),
        model_items=Gauge("shopstream_ranker_model_items", "Items in the served model's vocabulary"),
    )
