"""``shopstream``: one command line for every part of the system.

    shopstream up                 run the whole system locally (see README)
    shopstream ingest ...         publish events / catalog, replay datasets
    shopstream train ...          train, evaluate and publish a model bundle
    shopstream evaluate ...       PopRec vs the model over seeds: a table and JSON
    shopstream features|ranker|gateway   run one service (settings from env)
    shopstream experiments ...    define, list, show and promote experiments
    shopstream recommend USER     ask the gateway
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "up": ("services.stack.up", "run the whole system: brokers, model, services, traffic"),
    "ingest": ("services.ingest.cli", "publish events and catalog items, replay datasets"),
    "train": ("services.training.cli", "train, evaluate and publish a model bundle"),
    "evaluate": ("services.training.cli", "PopRec vs the model over several seeds (table + JSON)"),
    "experiments": ("services.experiments.cli", "define, list, show and promote experiments (docs/experiments.md)"),
    "recommend": ("services.stack.client", "ask the gateway for recommendations"),
    "features": ("services.features.main", "run the features worker"),
    "ranker": ("services.ranker.main", "run the ranker gRPC server"),
    "gateway": ("services.gateway.main", "run the gateway gRPC server"),
    "simulate": ("services.simulator.cli", "synthetic shoppers with known tastes against a gateway"),
    "retrain": ("services.training.from_kafka", "train a candidate from the Kafka event log, compare, publish"),
    "loop": ("services.simulator.loop", "the closed loop with simulated shoppers: drift, retrain, experiment, promote"),
}


def _usage() -> str:
    lines = ["usage: shopstream COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`shopstream COMMAND --help` shows a command's options (and its environment variables)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to ``COMMANDS[argv[0]]``'s ``main(rest)``; only the named module is imported,
    so a command's ``--help`` costs no more than that module's imports."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(_usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        problem = f"unknown command {argv[0]!r}" if argv else "a command is required"
        print(f"shopstream: {problem}\n\n{_usage()}", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "evaluate":  # a subcommand of the training CLI
        rest = ["evaluate", *rest]
    return importlib.import_module(COMMANDS[command][0]).main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
