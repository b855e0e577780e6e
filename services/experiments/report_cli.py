"""``shopstream experiments report NAME``: the attributed counts of an experiment, per variant,
with 95 % intervals, tests against the control and guardrails; JSON and a PNG chart on
request, and optionally the automatic promotion policy (``--auto-promote``).

Added to ``shopstream experiments`` through its ``SUBCOMMANDS`` (services/experiments/cli.py).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from services.experiments.definition import DefinitionError
from services.experiments.policy import METRICS, PromotionPolicy, apply_policy
from services.experiments.report import format_report, load_report
from services.experiments.store import ExperimentStore

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


# How a winner is promoted: ``promote(store, name, variant, models_dir)`` (the ``promote``
# command's, which also makes a model winner live at the ranker); the store's alone without it.
Promote = Callable[[ExperimentStore, str, str, "Path | None"], Awaitable[object]]


def add_report(sub: argparse._SubParsersAction, promote: Promote | None = None) -> None:
    p = sub.add_parser(
        "report", help="per-variant users, impressions, CTR, add-to-cart, conversion, revenue per impression "
                       "(95%% intervals), tests against the control, guardrails",
        description="Read the attribution counters of an experiment (written by the features worker) and print "
                    "per variant: users, impressions, CTR, add-to-cart rate, conversion rate (Wilson 95% "
                    "intervals), revenue per impression (normal 95% interval), the two-proportion z-test "
                    "(Welch z for revenue) against the control, and guardrails (fallback rate per variant; the "
                    "gateway's p99 latency and error rate with --gateway-metrics). See docs/experiments.md.")
    p.add_argument("name", help="the experiment (as served lists name it)")
    p.add_argument("--json", dest="json_path", type=Path, help="write the report as JSON here")
    p.add_argument("--chart", type=Path, help="write a PNG chart of CTR and conversion over time per variant")
    p.add_argument("--gateway-metrics", help="the gateway's Prometheus endpoint, e.g. http://127.0.0.1:9101/metrics")
    p.add_argument("--control", help="the variant the others are tested against (default: the definition's "
                                     "first served variant, else the first by name)")
    p.add_argument("--auto-promote", action="store_true",
                   help="apply the promotion policy: promote the best variant when every variant has "
                        "--min-impressions, p < --alpha on --metric and no guardrail is broken")
    p.add_argument("--metric", default="ctr", choices=METRICS, help="the deciding metric (default %(default)s)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default %(default)s)")
    p.add_argument("--min-impressions", type=int, default=1000, help="per variant (default %(default)s)")
    p.add_argument("--max-fallback-rate", type=float, default=0.05, help="guardrail (default %(default)s)")
    p.add_argument("--max-p99-latency-ms", type=float, default=250.0,
                   help="guardrail on the gateway's p99, with --gateway-metrics (default %(default)s)")
    p.add_argument("--max-error-rate", type=float, default=0.01,
                   help="guardrail on the gateway's server errors, with --gateway-metrics (default %(default)s)")
    env_dir = os.environ.get("SHOPSTREAM_RANKER_MODELS_DIR")
    p.add_argument("--models-dir", type=Path, default=Path(env_dir) if env_dir else None,
                   help="with --auto-promote: the ranker's models directory, where a model winner becomes "
                        "LATEST (default: $SHOPSTREAM_RANKER_MODELS_DIR)")
    p.set_defaults(run=run_report, promote=promote)


def default_redis_url() -> str:
    """$REDIS_URL, else the Redis of the stack `shopstream up` runs here (var/stack.json), else the default."""
    from services.stack.state import stack_redis_url

    return os.environ.get("REDIS_URL") or stack_redis_url() or DEFAULT_REDIS


async def _report(args) -> tuple[dict, object, int | None]:
    from services.common.infra import connect_redis

    redis = connect_redis(args.redis or default_redis_url())
    try:
        store = ExperimentStore(redis)
        definition = await store.get(args.name)
        declared = [v.name for v in definition.served] if definition is not None else []
        report = await load_report(redis, args.name, control=args.control, declared=declared,
                                   gateway_metrics_url=args.gateway_metrics)
        if not report["variants"]:
            raise DefinitionError(f"no served lists counted for experiment {args.name!r} (is the features "
                                  f"worker running with attribution on, and does the gateway publish impressions?)")
        decision = None
        if args.auto_promote:
            policy = PromotionPolicy(metric=args.metric, alpha=args.alpha, min_impressions=args.min_impressions,
                                     max_fallback_rate=args.max_fallback_rate,
                                     max_p99_latency_s=args.max_p99_latency_ms / 1000.0,
                                     max_error_rate=args.max_error_rate)
            how = None
            if args.promote is not None:
                async def how(name: str, variant: str) -> object:
                    return await args.promote(store, name, variant, args.models_dir)
            decision = await apply_policy(store, report, policy, promote=how)
            report["decision"] = {"promoted": decision.variant, "reason": decision.reason}
        default = await store.default()
        promoted_at = default.promoted_at_ms if default is not None and default.experiment == args.name else None
        return report, decision, promoted_at
    finally:
        await redis.aclose()


def run_report(args) -> int:
    report, decision, promoted_at = asyncio.run(_report(args))
    print(format_report(report))
    if decision is not None:
        print(f"\npolicy: {'promoted ' + decision.variant if decision.variant else 'no promotion'}: "
              f"{decision.reason}")
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json_path}")
    if args.chart:
        from services.experiments.chart import write_chart  # matplotlib only when a chart is asked for

        write_chart(report, args.chart, promoted_at_ms=promoted_at)
        print(f"wrote {args.chart}")
    return 0
