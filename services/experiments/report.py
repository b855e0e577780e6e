"""An experiment's report: per variant counts, rates with 95 % intervals, the test of each
variant against the control, guardrails, and the rates over time (for the chart).

``build_report`` is pure (counters in, a JSON-able dict out); ``load_report`` reads the
attribution aggregates from Redis and, when given, the gateway's Prometheus endpoint.
"""
from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from services.experiments.stats import Mean, histogram_quantile, mean_interval, two_proportion_z, welch_z, wilson
from services.features.attribution_store import VariantSeries, read_experiment, read_unattributed

# Proportions per served list: (report name, numerator counter). A list counts once however
# many of its items were clicked, so each is a Bernoulli trial per list (what Wilson and the
# z-test assume); clicks per impression (every click) is reported beside CTR.
PROPORTIONS = (("ctr", "clicked_lists"), ("add_to_cart_rate", "carted_lists"),
               ("conversion_rate", "purchased_lists"))
REVENUE = "revenue_per_impression"
GATEWAY_METHOD = "Recommend"
SERVER_ERRORS = frozenset({"INTERNAL", "UNKNOWN", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS"})


@dataclass(frozen=True)
class GatewayGuardrails:
    """Read from the gateway's /metrics: over the gateway's lifetime, all variants together
    (the gateway's metrics carry no variant label)."""

    p99_latency_s: float | None
    error_rate: float | None
    requests: float

    def as_dict(self) -> dict:
        return {"p99_latency_s": self.p99_latency_s, "error_rate": self.error_rate, "requests": self.requests,
                "source": "gateway /metrics (all variants)"}


def parse_gateway_metrics(text: str, method: str = GATEWAY_METHOD) -> GatewayGuardrails:
    """p99 of ``shopstream_gateway_rpc_duration_seconds`` and the share of server errors in
    ``shopstream_gateway_rpc_requests_total``, over the methods whose name ends in ``method``."""
    buckets: dict[float, float] = {}
    requests = errors = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            m = s.labels.get("method", "")
            if not m.endswith(method):
                continue
            if s.name == "shopstream_gateway_rpc_duration_seconds_bucket":
                bound = float(s.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + s.value
            elif s.name == "shopstream_gateway_rpc_requests_total":
                requests += s.value
                if s.labels.get("code") in SERVER_ERRORS:
                    errors += s.value
    p99 = histogram_quantile(0.99, sorted(buckets.items()))
    return GatewayGuardrails(p99, errors / requests if requests else None, requests)


def fetch_gateway_guardrails(url: str, timeout_s: float = 5.0) -> GatewayGuardrails:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return parse_gateway_metrics(resp.read().decode("utf-8"))


def _rate(successes: float, trials: float) -> dict:
    interval = wilson(successes, trials)
    return {"value": successes / trials if trials else None, "low": interval.low, "high": interval.high,
            "successes": successes, "trials": trials, "interval": "wilson"}


def _revenue(t: dict) -> Mean:
    return Mean(t.get("impressions", 0.0), t.get("revenue_micros", 0.0) / 1e6, t.get("revenue_sq", 0.0))


def _test(result) -> dict:
    return {"difference": result.difference, "z": result.z, "p_value": result.p_value}


def order_variants(series: dict[str, VariantSeries], declared: Sequence[str] = ()) -> list[str]:
    """The declared order (the definition's served variants) first, then any other seen."""
    named = [v for v in declared if v in series]
    return named + sorted(v for v in series if v not in named)


def build_report(experiment: str, series: dict[str, VariantSeries], *, control: str | None = None,
                 declared: Sequence[str] = (), gateway: GatewayGuardrails | None = None,
                 unattributed: dict[str, float] | None = None) -> dict:
    """The report as a JSON-able dict. ``control``: the variant the others are tested against
    (default: the first declared, else the first by name)."""
    names = order_variants(series, declared)
    if control is None and names:
        control = names[0]
    if control is not None and control not in series and names:
        raise ValueError(f"control variant {control!r} has no data (variants: {', '.join(names)})")
    totals = {v: series[v].totals() for v in names}
    variants = []
    for v in names:
        t = totals[v]
        n = t.get("impressions", 0.0)
        revenue = _revenue(t)
        interval = mean_interval(revenue)
        row = {
            "variant": v, "control": v == control, "users": series[v].users, "impressions": n,
            "clicks": t.get("clicks", 0.0), "add_to_carts": t.get("add_to_carts", 0.0),
            "purchases": t.get("purchases", 0.0), "revenue": t.get("revenue_micros", 0.0) / 1e6,
            "clicks_per_impression": t.get("clicks", 0.0) / n if n else None,
            "mean_click_position": (t["click_position_sum"] / t["click_position_count"]
                                    if t.get("click_position_count") else None),
            "click_positions": {k[4:]: c for k, c in sorted(t.items()) if k.startswith("pos:")},
            REVENUE: {"value": revenue.value if n else None, "low": interval.low, "high": interval.high,
                      "interval": "normal (CLT)"},
            "fallback_rate": _rate(t.get("degraded", 0.0), n),
            "tests": {},
        }
        for name, counter in PROPORTIONS:
            row[name] = _rate(t.get(counter, 0.0), n)
        if control is not None and v != control:
            c = totals[control]
            for name, counter in PROPORTIONS:
                row["tests"][name] = {**_test(two_proportion_z(c.get(counter, 0.0), c.get("impressions", 0.0),
                                                               t.get(counter, 0.0), n)),
                                      "test": "two-proportion z (pooled)"}
            row["tests"][REVENUE] = {**_test(welch_z(_revenue(c), revenue)), "test": "Welch z (normal)"}
        variants.append(row)
    return {
        "experiment": experiment, "control": control, "variants": variants,
        "guardrails": {"gateway": gateway.as_dict() if gateway else None,
                       "fallback_rate": "per variant: served lists marked degraded (trending fallback)"},
        "unattributed": unattributed or {},
        "series": _series(series, names),
    }


def _series(series: dict[str, VariantSeries], names: Sequence[str]) -> dict:
    """Per variant, per bucket: impressions, CTR and conversion rate (for the chart)."""
    out = {}
    for v in names:
        rows = []
        for bucket, c in sorted(series[v].buckets.items()):
            n = c.get("impressions", 0.0)
            rows.append({"bucket_ms": bucket, "impressions": n,
                         "ctr": c.get("clicked_lists", 0.0) / n if n else None,
                         "conversion_rate": c.get("purchased_lists", 0.0) / n if n else None})
        out[v] = rows
    return out


async def load_report(redis, experiment: str, *, control: str | None = None, declared: Sequence[str] = (),
                      gateway_metrics_url: str | None = None) -> dict:
    series = await read_experiment(redis, experiment)
    gateway = fetch_gateway_guardrails(gateway_metrics_url) if gateway_metrics_url else None
    return build_report(experiment, series, control=control, declared=declared, gateway=gateway,
                        unattributed=await read_unattributed(redis))


def _pct(rate: dict) -> str:
    if rate["value"] is None:
        return "-"
    return f"{100 * rate['value']:.2f}% [{100 * rate['low']:.2f}, {100 * rate['high']:.2f}]"


def format_report(report: dict) -> str:
    """The report as a text table."""
    head = (f"{'variant':<16} {'users~':>7} {'impr.':>8} {'CTR [95% CI]':>24} {'add-to-cart':>24} "
            f"{'conversion':>24} {'rev./impr. [95% CI]':>26} {'fallback':>9}")
    lines = [f"experiment {report['experiment']}  (control: {report['control']}; users~: HyperLogLog estimate, "
             f"standard error 0.81 %)", head, "-" * len(head)]
    for v in report["variants"]:
        rev = v[REVENUE]
        rev_text = "-" if rev["value"] is None else f"{rev['value']:.3f} [{rev['low']:.3f}, {rev['high']:.3f}]"
        fb = v["fallback_rate"]["value"]
        lines.append(f"{v['variant']:<16} {v['users']:>7} {v['impressions']:>8.0f} {_pct(v['ctr']):>24} "
                     f"{_pct(v['add_to_cart_rate']):>24} {_pct(v['conversion_rate']):>24} {rev_text:>26} "
                     f"{'-' if fb is None else f'{100 * fb:.2f}%':>9}")
    tests = [(v["variant"], name, t) for v in report["variants"] for name, t in v["tests"].items()]
    if tests:
        lines += ["", f"against control {report['control']} (two-sided p; proportions: two-proportion z-test, "
                      f"revenue: Welch z)"]
        for variant, name, t in tests:
            lines.append(f"  {variant:<16} {name:<24} diff {t['difference']:+.5f}  z {t['z']:+.2f}  "
                         f"p {t['p_value']:.4g}")
    gw = report["guardrails"]["gateway"]
    if gw:
        p99 = "-" if gw["p99_latency_s"] is None else f"{1000 * gw['p99_latency_s']:.1f} ms"
        err = "-" if gw["error_rate"] is None else f"{100 * gw['error_rate']:.3f}%"
        lines += ["", f"guardrails (gateway, all variants): p99 Recommend latency {p99}, server error rate {err}, "
                      f"{gw['requests']:.0f} requests"]
    un = {k: n for k, n in report["unattributed"].items() if n and not k.endswith("revenue_micros")}
    if un:
        lines += ["", "unattributed events (all experiments): "
                  + ", ".join(f"{k} {n:.0f}" for k, n in sorted(un.items()))]
    return "\n".join(lines)

