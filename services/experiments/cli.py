"""``shopstream experiments``: define, list, show and promote experiments (docs/experiments.md).

    shopstream experiments set FILE            store a definition (a JSON file; '-' = stdin)
    shopstream experiments set --json TEXT     the same, inline
    shopstream experiments list                every experiment, its status and variants
    shopstream experiments show NAME           one definition (JSON) and the live default
    shopstream experiments promote NAME VARIANT   make VARIANT the live default; ends NAME
                                               (a model variant becomes LATEST in --models-dir)
    shopstream experiments report NAME [--json PATH] [--chart PATH.png]   per-variant metrics and tests

Definitions live in Redis (``--redis``, default ``$REDIS_URL``); gateways pick changes up
within a second. ``set`` asks the ranker (``--ranker``) which model versions it holds and
refuses a variant naming one it has not loaded.

More subcommands plug in through ``SUBCOMMANDS``: a function that adds its parser to the
subparsers and sets ``run`` (args -> exit code) as its default.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from redis.exceptions import RedisError

from services.common.infra import redacted
from services.experiments.definition import DefinitionError, Experiment, Winner, parse
from services.experiments.report_cli import add_report, default_redis_url
from services.experiments.store import ExperimentStore, Malformed, UnknownExperiment

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_RANKER = "127.0.0.1:50051"


def _redis_url(args) -> str:
    return args.redis or default_redis_url()


def _ranker_addr(args) -> str:
    """--ranker, else $SHOPSTREAM_GATEWAY_RANKER_ADDR, else the running stack's ranker, else the default."""
    if args.ranker or os.environ.get("SHOPSTREAM_GATEWAY_RANKER_ADDR"):
        return args.ranker or os.environ["SHOPSTREAM_GATEWAY_RANKER_ADDR"]
    from services.stack.state import find_state

    state = find_state()
    return state.ranker if state is not None else DEFAULT_RANKER


async def _with_store(args, work):
    from services.common.infra import connect_redis  # the redis client only for commands that use it

    redis = connect_redis(_redis_url(args))
    try:
        return await work(ExperimentStore(redis))
    finally:
        await redis.aclose()


def loaded_model_versions(addr: str, timeout_s: float = 5.0) -> set[str]:
    """The model versions the ranker at ``addr`` holds (RankerService.ListModels); DefinitionError
    saying why when it cannot tell."""
    import grpc
    from shopstream.ranker.v1 import ranker_pb2, ranker_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
        try:
            reply = ranker_pb2_grpc.RankerServiceStub(channel).ListModels(ranker_pb2.ListModelsRequest(),
                                                                          timeout=timeout_s)
        except grpc.RpcError as exc:
            raise DefinitionError(f"cannot check the variants' model versions: the ranker at {addr} answered "
                                  f"{exc.code().name}: {exc.details()} (set --ranker)") from None
    return {model.version for model in reply.models}


def describe(experiment: Experiment) -> str:
    total = sum(v.weight or 0.0 for v in experiment.served)
    parts = []
    for v in experiment.variants:
        what = v.model_version if v.model_version else v.kind
        if v.kind == "shadow":
            parts.append(f"{v.name} (shadow, {what})")
        else:
            parts.append(f"{v.name} {100 * (v.weight or 0) / total:.1f}% ({what})")
    status = experiment.status + (f", winner {experiment.winner}" if experiment.winner else "")
    return f"{experiment.name} [{status}]: {', '.join(parts)}"


# -- subcommands ------------------------------------------------------------------------


def _add_set(sub) -> None:
    p = sub.add_parser("set", help="store an experiment definition (refused with a message if it is not valid)",
                       description="Store (create or replace) a running experiment. The definition is checked: "
                                   "unknown or malformed fields, weights that do not sum to a positive number, "
                                   "a model version the ranker has not loaded, another running experiment.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("file", nargs="?", type=Path, help="JSON definition ('-' reads stdin)")
    src.add_argument("--json", dest="text", help="the JSON definition inline")
    p.add_argument("--ranker", default=None,
                   help="the ranker asked which model versions are loaded (default: "
                        "$SHOPSTREAM_GATEWAY_RANKER_ADDR, else the running stack's (var/stack.json), "
                        f"else {DEFAULT_RANKER})")
    p.set_defaults(run=_run_set)


def _run_set(args) -> int:
    if args.text is not None:
        text = args.text
    elif str(args.file) == "-":
        text = sys.stdin.read()
    else:
        try:
            text = args.file.read_text(encoding="utf-8")
        except OSError as exc:
            raise DefinitionError(f"cannot read {args.file}: {exc.strerror}") from None
    experiment = parse(text)
    loaded = loaded_model_versions(_ranker_addr(args)) if experiment.model_versions() else None
    stored = asyncio.run(_with_store(args, lambda store: store.set(experiment, loaded)))
    print(f"stored: {describe(stored)}")
    return 0


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="every stored experiment, its status and variants")
    p.set_defaults(run=_run_list)


def _run_list(args) -> int:
    async def read(store):
        return await store.list(), await store.default()

    experiments, default = asyncio.run(_with_store(args, read))
    if not experiments:
        print("no experiments")
    for e in experiments:
        print(f"{e.name}: MALFORMED ({e.error})" if isinstance(e, Malformed) else describe(e))
    if default is not None:
        print(f"live default: {default.variant} of {default.experiment} "
              f"({default.model_version or default.kind})")
    return 0


def _add_show(sub) -> None:
    p = sub.add_parser("show", help="one experiment's definition (JSON)")
    p.add_argument("name")
    p.set_defaults(run=_run_show)


def _run_show(args) -> int:
    async def read(store):
        return await store.get(args.name), await store.default()

    experiment, default = asyncio.run(_with_store(args, read))
    if experiment is None:
        raise DefinitionError(f"no experiment named {args.name!r}")
    print(json.dumps(json.loads(experiment.to_json()), indent=2))
    if default is not None and default.experiment == args.name:
        print(f"# live default since its promotion: {default.variant} ({default.model_version or default.kind})")
    return 0


async def promote(store: ExperimentStore, name: str, variant: str, models_dir: Path | None) -> Winner:
    """Make ``variant`` of ``name`` the live default and end the experiment.

    A model (or shadow) variant becomes the ranker's live model: ``LATEST`` of ``models_dir``
    names its version (``set_live``; rankers switch on their next poll, gateways serve the
    live model), which needs ``models_dir``. A trending variant is recorded in Redis only:
    gateways then serve trending to everyone until another promotion. Either way the store
    records the winner and ends the experiment."""
    experiment = await store.get(name)
    if experiment is None:
        raise UnknownExperiment(f"no experiment named {name!r}")
    chosen = experiment.variant(variant)
    if chosen.model_version:
        if models_dir is None:
            raise DefinitionError(f"promoting {variant!r} makes model {chosen.model_version} live at the ranker: "
                                  "give the models directory (--models-dir, $SHOPSTREAM_RANKER_MODELS_DIR or a running stack)")
        from services.common.bundle.errors import BundleError
        from services.common.bundle.registry import set_live

        try:
            set_live(models_dir, chosen.model_version, keep_previous=True)
        except BundleError as exc:
            raise DefinitionError(f"model {chosen.model_version} cannot be made live: {exc}") from None
    return await store.promote(name, variant)


def _add_promote(sub) -> None:
    p = sub.add_parser("promote", help="make a variant the live default and end the experiment",
                       description="Make VARIANT the live default and end experiment NAME. A model variant "
                                   "becomes the ranker's live model (LATEST in the models directory); trending "
                                   "is served to everyone until another promotion.")
    p.add_argument("name")
    p.add_argument("variant")
    p.add_argument("--models-dir", type=Path,
                   help="the ranker's models directory (default: $SHOPSTREAM_RANKER_MODELS_DIR, else the running "
                        "stack's (var/stack.json))")
    p.set_defaults(run=_run_promote)


def _models_dir(args) -> Path | None:
    """--models-dir, else $SHOPSTREAM_RANKER_MODELS_DIR, else the running stack's, else None."""
    if args.models_dir or os.environ.get("SHOPSTREAM_RANKER_MODELS_DIR"):
        return args.models_dir or Path(os.environ["SHOPSTREAM_RANKER_MODELS_DIR"])
    from services.stack.state import find_state

    state = find_state()
    return Path(state.models_dir) if state is not None and state.models_dir else None


def _run_promote(args) -> int:
    models_dir = _models_dir(args)
    winner = asyncio.run(_with_store(args, lambda store: promote(store, args.name, args.variant, models_dir)))
    print(f"promoted: {winner.variant} of {winner.experiment} is the live default "
          f"({winner.model_version or winner.kind}); the experiment has ended")
    return 0


# Each adds one subcommand (a parser with ``run`` as its default). Other modules' subcommands
# (``report``) are added here too.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_set, _add_list, _add_show, _add_promote,
    lambda sub: add_report(sub, promote=promote),  # --auto-promote promotes as `promote` does
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shopstream experiments", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", default=None,
                        help="Redis URL of the definitions (default: $REDIS_URL, else the running stack's "
                             f"(var/stack.json), else {DEFAULT_REDIS})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except DefinitionError as exc:
        print(f"shopstream experiments {args.command}: refused: {exc}", file=sys.stderr)
        return 1
    except (OSError, RedisError) as exc:
        print(f"shopstream experiments {args.command}: Redis at {redacted(_redis_url(args))}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
