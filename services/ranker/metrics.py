"""The ranker's Prometheus metrics (prefix ``shopstream_ranker_``), created once per process."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from services.common.rpc_metrics import RpcMetrics, make_rpc_metrics

# Scoring alone should stay well under the 50 ms serving budget.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# What a loaded model is to the ranker: the one LATEST names, or one listed in CANDIDATES.
LIVE, CANDIDATE = "live", "candidate"
ROLES = (LIVE, CANDIDATE)
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
    batch_size: Histogram
    batch_wait: Histogram
    batch_duration: Histogram
    queue_rejected: Counter
    exact_fallbacks: Counter
    model_bytes: Gauge
    models_loaded: Gauge

    def set_model_version(self, old: str | None, new: str) -> None:
        if old:
            self.model_info.remove(old)
        self.model_info.labels(new).set(1)

    def set_models(self, sizes: dict[tuple[str, str], int], previous: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """``model_bytes`` for every (version, role) in ``sizes``, the series of ``previous`` that
        are gone removed, ``models_loaded`` per role; returns the series now set."""
        for key in previous - sizes.keys():
            self.model_bytes.remove(*key)
        for key, size in sizes.items():
            self.model_bytes.labels(*key).set(size)
        for role in ROLES:
            self.models_loaded.labels(role).set(sum(1 for _, r in sizes if r == role))
        return set(sizes)


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
        batch_size=Histogram("shopstream_ranker_batch_requests", "Rank calls per micro-batch",
                             buckets=BATCH_SIZE_BUCKETS),
        batch_wait=Histogram("shopstream_ranker_batch_wait_seconds",
                             "Queue time of the oldest call of each micro-batch", buckets=SCORING_BUCKETS_SECONDS),
        batch_duration=Histogram("shopstream_ranker_batch_duration_seconds",
                                 "Encoding plus scoring time per micro-batch, in the executor",
                                 buckets=SCORING_BUCKETS_SECONDS),
        queue_rejected=Counter("shopstream_ranker_queue_rejected_total",
                               "Rank calls refused with RESOURCE_EXHAUSTED because the queue was full"),
        exact_fallbacks=Counter("shopstream_ranker_exact_fallbacks_total",
                                "Rows whose over-fetched candidates left fewer than k after filtering"),
        # A version label is bounded: at most SHOPSTREAM_RANKER_MAX_MODELS series at a time, and a
        # version's series is removed when it is unloaded.
        model_bytes=Gauge("shopstream_ranker_model_bytes",
                          "Memory a loaded model holds: item tables and scorer copies plus onnxruntime session "
                          "initializers (services/ranker/memory.py)", ["version", "version_role"]),
        models_loaded=Gauge("shopstream_ranker_models_loaded", "Model versions loaded, by role", ["version_role"]),
    )
