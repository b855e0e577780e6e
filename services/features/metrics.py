"""Prometheus metrics of the features worker (``shopstream_features_*``).

Labels are bounded: topic, partition, reason, model version; never ids of users,
items or events.
"""
from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# Kafka timestamp -> Redis write; the SLO is "visible to the ranker within ~100 ms".
FRESHNESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class FeaturesMetrics:
    """All metrics of one worker, on one registry (tests pass a fresh one)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        p = "shopstream_features_"
        r = registry
        self.events_processed = Counter(p + "events_processed_total", "Event records consumed", registry=r)
        self.events_applied = Counter(p + "events_applied_total", "Events applied to user state (new)", registry=r)
        self.events_duplicate = Counter(p + "events_duplicate_total", "Redelivered events skipped by dedup", registry=r)
        self.records_invalid = Counter(p + "records_invalid_total", "Records failing decode/validation",
                                       ["topic", "reason"], registry=r)
        self.records_dead_lettered = Counter(p + "records_dead_lettered_total", "Records sent to the DLQ",
                                             ["topic"], registry=r)
        self.catalog_applied = Counter(p + "catalog_items_applied_total", "Catalog records upserted", registry=r)
        self.batch_size = Histogram(p + "batch_events", "Records per processed batch", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.batch_seconds = Histogram(p + "batch_seconds", "Time to process one batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.freshness = Histogram(p + "freshness_seconds", "Kafka message timestamp to Redis write",
                                   buckets=FRESHNESS_BUCKETS, registry=r)
        self.store_retries = Counter(p + "store_retries_total", "Batches retried after a Redis error", registry=r)
        self.batch_failures = Counter(p + "batch_failures_total",
                                      "Batches that failed otherwise (retried, unacked; not live meanwhile)",
                                      ["agent"], registry=r)
        self.consumer_lag = Gauge(p + "consumer_lag_messages", "Highwater minus position",
                                  ["topic", "partition"], registry=r)
        self.assigned_partitions = Gauge(p + "assigned_partitions", "Partitions this worker consumes (0 = not ready)",
                                         registry=r)
        self.model_info = Gauge(p + "model_info", "1 for the loaded model version", ["version"], registry=r)
        self.model_reload_failures = Counter(p + "model_reload_failures_total", "Bundles that failed to load",
                                             registry=r)
        self.embedding_refresh = Histogram(p + "embedding_refresh_seconds", "get_states+encode+put per batch",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.embedding_refresh_failures = Counter(p + "embedding_refresh_failures_total",
                                                  "Batches whose embeddings were not refreshed", registry=r)
        self.embeddings_written = Counter(p + "embeddings_written_total", "User embeddings written", registry=r)
        self.trending_decays = Counter(p + "trending_decays_total", "Trending decays run by this worker",
                                       registry=r)
        self.rebuilds = Counter(p + "rebuilds_total", "Partitions replayed from Kafka after Redis lost state",
                                ["topic", "reason"], registry=r)
        self.rebuilding = Gauge(p + "rebuilding_partitions", "Partitions being replayed now (new writes wait)",
                                registry=r)
        self.log_replacements = Counter(p + "log_replacements_total",
                                        "Partitions whose broker came back with a new log (read again from "
                                        "its beginning)", ["topic"], registry=r)

        # Attribution (attribution.py): per experiment and variant, names bounded by the experiment
        # definitions; counted when the aggregates are applied, so each record once per process.
        a = "shopstream_attribution_"
        xv = ["experiment", "variant"]
        self.attribution_impressions = Counter(a + "impressions_total", "Served lists counted", xv, registry=r)
        self.attribution_clicks = Counter(a + "clicks_total", "Clicks attributed to a served list", xv, registry=r)
        self.attribution_add_to_carts = Counter(a + "add_to_carts_total", "Add-to-carts attributed to a list", xv,
                                                registry=r)
        self.attribution_purchases = Counter(a + "purchases_total", "Purchases attributed to a list", xv,
                                             registry=r)
        self.attribution_revenue = Counter(a + "revenue_total", "Revenue attributed to a list (currency units)",
                                           xv, registry=r)
        self.attribution_unattributed = Counter(a + "unattributed_total", "Events attributed to no list",
                                                ["reason", "type"], registry=r)
        self.attribution_late = Counter(a + "late_attributed_total",
                                        "Events first unattributed (their list not seen yet), attributed when it came",
                                        ["type"], registry=r)
        self.attribution_skipped = Counter(a + "records_skipped_total", "Records, or lists in a batch record, the attribution job could not read",
                                           ["topic", "reason"], registry=r)
        self.attribution_unpriced = Counter(a + "unpriced_purchases_total",
                                            "Purchases with neither a value nor a catalog price (revenue 0)",
                                            registry=r)

    def set_model(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version).set(1)
