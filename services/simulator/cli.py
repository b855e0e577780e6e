"""``shopstream simulate``: synthetic shoppers against a running gateway.

The shoppers' tastes come from the synthetic generator's ground truth, so the
generator settings here must be those the system was started with (the defaults are
``shopstream up``'s). Prints per-variant counts and the ground-truth CTR; with
``--log`` writes the shoppers' JSONL log and ``<log>.summary.json``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from services.common.logs import configure_logging
from services.ingest.synthetic import SyntheticConfig, generate
from services.simulator.behaviour import BehaviourConfig
from services.simulator.journal import Journal, Summary
from services.simulator.runner import Simulation, SimulationConfig


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    d = SyntheticConfig()
    g = p.add_argument_group("the synthetic shop the system runs (ground truth)")
    g.add_argument("--synthetic-users", type=int, default=d.users)
    g.add_argument("--synthetic-items", type=int, default=d.items)
    g.add_argument("--synthetic-categories", type=int, default=d.categories)
    g.add_argument("--synthetic-seed", type=int, default=d.seed)


def dataset_config(args: argparse.Namespace) -> SyntheticConfig:
    return SyntheticConfig(users=args.synthetic_users, items=args.synthetic_items,
                           categories=args.synthetic_categories, seed=args.synthetic_seed)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shopstream simulate", description=__doc__.splitlines()[0])
    c = SimulationConfig()
    b = BehaviourConfig()
    p.add_argument("--gateway", default=None,
                   help="host:port (default: $SHOPSTREAM_GATEWAY_ADDR, else the stack `shopstream up` runs "
                        "here (var/stack.json), else 127.0.0.1:50052)")
    p.add_argument("--token", default=os.environ.get("SHOPSTREAM_TOKEN"),
                   help="API token (default: $SHOPSTREAM_TOKEN); not needed for a development gateway")
    p.add_argument("--shoppers", type=int, default=c.shoppers)
    p.add_argument("--duration", type=float, default=c.duration_s, help="seconds to run")
    p.add_argument("--lists-per-shopper", type=int, default=None, help="stop each shopper after this many lists")
    p.add_argument("--drift-after", type=float, default=None, help="tastes rotate this many seconds into the run")
    p.add_argument("--drift-after-sessions", type=int, default=None,
                   help="... or after each shopper's Nth session")
    p.add_argument("--drift-shift", type=int, default=None,
                   help="how many categories the tastes rotate by (default: half of them)")
    p.add_argument("--seed", type=int, default=c.seed)
    p.add_argument("-k", type=int, default=c.k)
    p.add_argument("--think", type=float, default=c.think_s, help="mean seconds between two lists of a session")
    p.add_argument("--session-gap", type=float, default=c.session_gap_s, help="mean seconds between sessions")
    p.add_argument("--max-in-flight", type=int, default=None, help="calls to the gateway at once (default: no bound)")
    p.add_argument("--eta", type=float, default=b.eta, help="position bias: examination 1/(1+pos)^eta")
    p.add_argument("--log", type=Path, default=None, help="the shoppers' JSONL log")
    add_dataset_args(p)
    p.add_argument("--log-level", default="WARNING")
    return p


def format_summary(summary: Summary) -> str:
    head = (f"{'variant':<28}{'users':>7}{'lists':>8}{'clicks':>8}{'carts':>7}{'buys':>6}"
            f"{'CTR':>8}{'true CTR':>10}")
    lines = [head]
    for name, v in sorted(summary.variants.items()):
        lines.append(f"{name[:27]:<28}{v.users:>7}{v.impressions:>8}{v.clicks:>8}{v.add_to_carts:>7}"
                     f"{v.purchases:>6}{v.ctr:>8.4f}{v.expected_ctr:>10.4f}")
    lines.append(f"lists {summary.lists}, events {summary.events}, failed calls {summary.errors}")
    return "\n".join(lines)


def _gateway_addr(args: argparse.Namespace) -> str:
    if args.gateway or os.environ.get("SHOPSTREAM_GATEWAY_ADDR"):
        return args.gateway or os.environ["SHOPSTREAM_GATEWAY_ADDR"]
    from services.stack.state import find_state

    state = find_state()
    return state.gateway if state is not None else "127.0.0.1:50052"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.gateway = _gateway_addr(args)
    configure_logging(args.log_level, json_format=False)
    cfg = SimulationConfig(shoppers=args.shoppers, duration_s=args.duration, lists_per_shopper=args.lists_per_shopper,
                           seed=args.seed, k=args.k, think_s=args.think, session_gap_s=args.session_gap,
                           drift_after_s=args.drift_after, drift_after_sessions=args.drift_after_sessions,
                           drift_shift=args.drift_shift, max_in_flight=args.max_in_flight,
                           behaviour=BehaviourConfig(eta=args.eta))
    if cfg.duration_s <= 0 and cfg.lists_per_shopper is None:
        print("shopstream simulate: give --duration or --lists-per-shopper", file=sys.stderr)
        return 2
    dataset = generate(dataset_config(args))
    with Journal(args.log) as journal:
        sim = Simulation(args.gateway, dataset, cfg, journal, token=args.token)
        summary = asyncio.run(sim.run())
    print(format_summary(summary))
    if args.log is not None:
        out = args.log.with_name(args.log.name + ".summary.json")
        out.write_text(json.dumps(summary.as_dict(), indent=2), encoding="utf-8")
        print(f"log: {args.log}, summary: {out}")
    return 0 if summary.lists else 1
