"""The optional automatic promotion policy: promote the best variant of a running experiment
once every served variant has the minimum sample, the best one differs from the control
with p < alpha on the deciding metric, and no guardrail is broken.

``decide`` is pure (a report in, a decision out); ``apply_policy`` reads the report and
calls the experiment store's ``promote``. Looking at a running test again and again and
stopping at the first p < alpha inflates the false-positive rate (docs/experiments.md,
"Statistics and their assumptions"): pick ``min_impressions`` before starting and keep
``alpha`` strict when the policy runs on a schedule.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.experiments.report import PROPORTIONS, REVENUE

logger = logging.getLogger(__name__)

METRICS = tuple(name for name, _ in PROPORTIONS) + (REVENUE,)


@dataclass(frozen=True)
class PromotionPolicy:
    metric: str = "ctr"  # one of METRICS; higher is better
    alpha: float = 0.05
    min_impressions: int = 1000  # per served variant
    max_fallback_rate: float = 0.05  # per variant: lists served degraded (trending fallback)
    max_p99_latency_s: float | None = 0.25  # the gateway's, when the report has it
    max_error_rate: float | None = 0.01  # the gateway's server errors, when the report has it

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {self.metric!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1, not {self.alpha}")


@dataclass(frozen=True)
class Decision:
    variant: str | None  # the one to promote; None: not yet (or never, see reason)
    reason: str


def _value(row: dict, metric: str) -> float:
    value = row[metric]["value"]
    return float("-inf") if value is None else value


def decide(report: dict, policy: PromotionPolicy) -> Decision:
    """Whom to promote now, if anyone, and why (or why not)."""
    rows = report["variants"]
    if len(rows) < 2:
        return Decision(None, "fewer than two variants have data")
    small = [f"{r['variant']} ({r['impressions']:.0f})" for r in rows if r["impressions"] < policy.min_impressions]
    if small:
        return Decision(None, f"below {policy.min_impressions} impressions: {', '.join(small)}")
    gateway = report["guardrails"].get("gateway")
    if gateway:
        p99, errors = gateway.get("p99_latency_s"), gateway.get("error_rate")
        if policy.max_p99_latency_s is not None and p99 is not None and p99 > policy.max_p99_latency_s:
            return Decision(None, f"guardrail: gateway p99 {p99 * 1000:.1f} ms > {policy.max_p99_latency_s * 1000:g} ms")
        if policy.max_error_rate is not None and errors is not None and errors > policy.max_error_rate:
            return Decision(None, f"guardrail: gateway error rate {errors:.4f} > {policy.max_error_rate:g}")
    metric = policy.metric
    best = max(rows, key=lambda r: _value(r, metric))
    control = next(r for r in rows if r["control"])
    if best["control"]:
        # The control wins only if it beats every other variant significantly.
        weak = [r["variant"] for r in rows if not r["control"]
                and not (r["tests"][metric]["p_value"] < policy.alpha and r["tests"][metric]["difference"] < 0)]
        if weak:
            return Decision(None, f"control {control['variant']} leads on {metric}, but not significantly against "
                                  f"{', '.join(weak)} (alpha {policy.alpha:g})")
    else:
        test = best["tests"][metric]
        if not (test["p_value"] < policy.alpha and test["difference"] > 0):
            return Decision(None, f"{best['variant']} leads on {metric}, p {test['p_value']:.4g} "
                                  f"not below alpha {policy.alpha:g}")
    fallback = best["fallback_rate"]["value"] or 0.0
    if fallback > policy.max_fallback_rate:
        return Decision(None, f"guardrail: {best['variant']} fallback rate {fallback:.4f} > "
                              f"{policy.max_fallback_rate:g}")
    others = [r for r in rows if r is not best]
    against = ("against " + ", ".join(f"{r['variant']} {_value(r, metric):.5g}" for r in others) if best["control"]
               else f"against control {_value(control, metric):.5g}")
    return Decision(best["variant"], f"{best['variant']} is best on {metric} ({_value(best, metric):.5g} {against}), "
                                     f"significant at alpha {policy.alpha:g}, guardrails hold")


async def apply_policy(store, report: dict, policy: PromotionPolicy,
                       promote: Callable[[str, str], Awaitable[object]] | None = None) -> Decision:
    """``decide``, and when it names a variant, ``promote(experiment, variant)`` (default: the
    store's ``promote``, which records the winner); nothing for an experiment that is not (or
    no longer) running."""
    experiment = await store.get(report["experiment"])
    if experiment is None or not experiment.running:
        return Decision(None, "the experiment is not running" if experiment else "no such experiment definition")
    decision = decide(report, policy)
    if decision.variant is not None:
        await (promote or store.promote)(report["experiment"], decision.variant)
        logger.info("promoted", extra={"experiment": report["experiment"], "variant": decision.variant,
                                       "reason": decision.reason})
    return decision
