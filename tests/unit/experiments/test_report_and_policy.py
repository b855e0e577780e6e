"""The report built from counters, the gateway guardrails from /metrics text, the chart, and
the promotion policy's decisions."""
import dataclasses
import math

import pytest

from services.experiments.chart import write_chart
from services.experiments.policy import Decision, PromotionPolicy, apply_policy, decide
from services.experiments.report import build_report, format_report, parse_gateway_metrics
from services.experiments.stats import two_proportion_z, wilson
from services.features.attribution_store import VariantSeries

MIN = 60_000


def series(variant, buckets, users=10):
    return VariantSeries(variant, users=users, buckets={b * MIN: dict(c) for b, c in enumerate(buckets)})


def counters(impressions, clicked, purchased=0, revenue=0.0, degraded=0):
    return {"impressions": impressions, "clicked_lists": clicked, "clicks": clicked, "purchased_lists": purchased,
            "purchases": purchased, "revenue_micros": revenue * 1e6, "revenue_sq": revenue, "degraded": degraded}


def two_arms(control_clicks=100, treatment_clicks=150, n=1000, degraded=0):
    return {"control": series("control", [counters(n // 2, control_clicks // 2), counters(n // 2, control_clicks // 2)]),
            "treatment": series("treatment", [counters(n // 2, treatment_clicks // 2, degraded=degraded),
                                              counters(n // 2, treatment_clicks // 2)])}


def test_report_rates_intervals_and_tests():
    report = build_report("exp", two_arms(), declared=["control", "treatment"])
    control, treatment = report["variants"]
    assert report["control"] == "control" and control["control"] and not control["tests"]
    assert treatment["impressions"] == 1000 and treatment["ctr"]["value"] == pytest.approx(0.15)
    expected = wilson(150, 1000)
    assert (treatment["ctr"]["low"], treatment["ctr"]["high"]) == (expected.low, expected.high)
    test = treatment["tests"]["ctr"]
    assert test["p_value"] == pytest.approx(two_proportion_z(100, 1000, 150, 1000).p_value)
    assert test["difference"] == pytest.approx(0.05)
    assert [row["ctr"] for row in report["series"]["treatment"]] == [pytest.approx(0.15), pytest.approx(0.15)]
    text = format_report(report)
    assert "treatment" in text and "15.00%" in text


def test_revenue_per_impression_from_sums():
    # 4 lists: revenues 10, 0, 0, 30 -> sum 40, sum of squares 1000
    s = {"a": VariantSeries("a", 1, {0: {"impressions": 4, "revenue_micros": 40e6, "revenue_sq": 1000.0}}),
         "b": VariantSeries("b", 1, {0: {"impressions": 4}})}
    row = build_report("exp", s)["variants"][0]
    sd = math.sqrt((1000 - 40 ** 2 / 4) / 3)
    assert row["revenue_per_impression"]["value"] == 10.0
    assert row["revenue_per_impression"]["high"] == pytest.approx(10 + 1.959964 * sd / 2, abs=1e-5)


def test_unknown_control_is_refused():
    with pytest.raises(ValueError, match="control variant 'nope'"):
        build_report("exp", two_arms(), control="nope")


METRICS_TEXT = """\
# TYPE shopstream_gateway_rpc_duration_seconds histogram
shopstream_gateway_rpc_duration_seconds_bucket{method="/shopstream.gateway.v1.Gateway/Recommend",le="0.01"} 90.0
shopstream_gateway_rpc_duration_seconds_bucket{method="/shopstream.gateway.v1.Gateway/Recommend",le="0.1"} 99.0
shopstream_gateway_rpc_duration_seconds_bucket{method="/shopstream.gateway.v1.Gateway/Recommend",le="+Inf"} 100.0
shopstream_gateway_rpc_duration_seconds_bucket{method="/shopstream.gateway.v1.Gateway/TrackEvents",le="0.01"} 0.0
shopstream_gateway_rpc_duration_seconds_bucket{method="/shopstream.gateway.v1.Gateway/TrackEvents",le="+Inf"} 50.0
shopstream_gateway_rpc_duration_seconds_count{method="/shopstream.gateway.v1.Gateway/Recommend"} 100.0
shopstream_gateway_rpc_duration_seconds_sum{method="/shopstream.gateway.v1.Gateway/Recommend"} 1.0
# TYPE shopstream_gateway_rpc_requests_total counter
shopstream_gateway_rpc_requests_total{method="/shopstream.gateway.v1.Gateway/Recommend",code="OK"} 97.0
shopstream_gateway_rpc_requests_total{method="/shopstream.gateway.v1.Gateway/Recommend",code="UNAVAILABLE"} 2.0
shopstream_gateway_rpc_requests_total{method="/shopstream.gateway.v1.Gateway/Recommend",code="INVALID_ARGUMENT"} 1.0
"""


def test_gateway_guardrails_from_metrics_text():
    g = parse_gateway_metrics(METRICS_TEXT)
    assert g.p99_latency_s == pytest.approx(0.1)  # the 99th of 100 falls at the 0.1 bound
    assert g.error_rate == pytest.approx(0.02)  # client errors (INVALID_ARGUMENT) are not the gateway's
    assert g.requests == 100


def test_chart_is_a_png(tmp_path):
    path = write_chart(build_report("exp", two_arms()), tmp_path / "c.png", promoted_at_ms=MIN)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


POLICY = PromotionPolicy(min_impressions=500, alpha=0.05)


def test_policy_promotes_a_significant_winner():
    decision = decide(build_report("exp", two_arms()), POLICY)
    assert decision.variant == "treatment", decision.reason


def test_policy_waits_for_the_sample_and_significance():
    assert decide(build_report("exp", two_arms(n=400)), POLICY).variant is None
    undecided = decide(build_report("exp", two_arms(treatment_clicks=110)), POLICY)
    assert undecided.variant is None and "not below alpha" in undecided.reason


def test_policy_promotes_the_control_only_when_it_beats_every_variant():
    kept = decide(build_report("exp", two_arms(control_clicks=150, treatment_clicks=100)), POLICY)
    assert kept.variant == "control" and "against treatment" in kept.reason, kept.reason
    assert decide(build_report("exp", two_arms(control_clicks=110, treatment_clicks=100)), POLICY).variant is None


def test_policy_guardrails_block_promotion():
    broken = decide(build_report("exp", two_arms(degraded=100)), POLICY)
    assert broken.variant is None and "fallback rate" in broken.reason
    slow = build_report("exp", two_arms(), gateway=parse_gateway_metrics(METRICS_TEXT))
    assert "p99" in decide(slow, dataclasses.replace(POLICY, max_p99_latency_s=0.05)).reason
    assert "error rate" in decide(slow, dataclasses.replace(POLICY, max_p99_latency_s=1.0)).reason
    assert decide(slow, dataclasses.replace(POLICY, max_p99_latency_s=1.0, max_error_rate=0.05)).variant == "treatment"


def test_policy_refuses_unknown_metric():
    with pytest.raises(ValueError, match="metric"):
        PromotionPolicy(metric="happiness")


class FakeStore:
    """The two calls apply_policy makes of ExperimentStore (get, promote)."""

    def __init__(self, running=True):
        self.running = running
        self.promoted = []

    async def get(self, name):
        return type("E", (), {"running": self.running})()

    async def promote(self, name, variant):
        self.promoted.append((name, variant))


async def test_apply_policy_calls_promote_once_decided():
    store = FakeStore()
    decision = await apply_policy(store, build_report("exp", two_arms()), POLICY)
    assert decision == Decision("treatment", decision.reason) and store.promoted == [("exp", "treatment")]
    ended = FakeStore(running=False)
    assert (await apply_policy(ended, build_report("exp", two_arms()), POLICY)).variant is None
    assert ended.promoted == []
