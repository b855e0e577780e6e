"""services.stack.processes.metric_value: what `shopstream up`, the e2e tests and the benches read
from a service's /metrics, parsed with prometheus_client's own parser."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from services.stack.processes import metric_value


def _exposition() -> str:
    registry = CollectorRegistry()
    events = Counter("shopstream_test_events", "events", ["type"], registry=registry)
    events.labels("view").inc(2)
    events.labels("click").inc(3)
    Gauge("shopstream_test_assigned_partitions", "partitions", registry=registry).set(4)
    Histogram("shopstream_test_latency_seconds", "latency", buckets=(0.1, 1.0), registry=registry).observe(0.5)
    return generate_latest(registry).decode()


def test_sums_every_labelled_sample_of_a_name():
    assert metric_value(_exposition(), "shopstream_test_events_total") == 5.0
    assert metric_value(_exposition(), "shopstream_test_assigned_partitions") == 4.0


def test_names_a_sample_not_a_family():
    text = _exposition()
    assert metric_value(text, "shopstream_test_latency_seconds_count") == 1.0
    assert metric_value(text, "shopstream_test_latency_seconds_bucket") == 0.0 + 1.0 + 1.0  # le=0.1, le=1.0, le=+Inf
    assert metric_value(text, "shopstream_test_events") is None  # the counter's family, not a sample
    assert metric_value(text, "shopstream_test") is None  # a prefix is not a name


def test_absent_metric_and_empty_text():
    assert metric_value(_exposition(), "shopstream_test_missing") is None
    assert metric_value("", "shopstream_test_events_total") is None
