"""``python -m bench [--quick]``: the ranker, serve, ingest, training and loop_cost benchmarks, one after another.

Each writes its own bench/results/<name>.json. ``served_quality`` (served =
measured on Beauty) runs separately: it needs a Beauty-trained bundle.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback


BENCHMARKS = ("ranker", "serve", "ingest", "training", "loop_cost")


def _run(name: str, argv: list[str]) -> str:
    module = importlib.import_module(f"bench.{name}")
    try:
        rc = module.main(argv)
    except SystemExit as exc:
        rc = exc.code
    except Exception:
        traceback.print_exc()
        return "failed"
    return "ok" if not rc else f"exit {rc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short version of every benchmark")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS)
    args = parser.parse_args(argv)
    outcomes = {}
    for name in args.only or BENCHMARKS:
        print(f"\n######## bench.{name}", flush=True)
        outcomes[name] = _run(name, ["--quick"] if args.quick else [])
    print("\n" + "\n".join(f"bench.{n}: {o}" for n, o in outcomes.items()))
    return 0 if all(o == "ok" for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
