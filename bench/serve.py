"""Serving benchmark: requests/s and latency at concurrency 1/16/64 for
(a) a trivial echo server on the same gRPC stack (bench.echo),
(b) the ranker alone (Rank, which reads the user's state from Redis itself),
(c) the full gateway path (Recommend -> ranker -> Redis), users with real state,
(d) the same Recommend through the gateway's HTTP/JSON API (``http``: POST /v1/recommend,
    bench.http_loadgen), to show what HTTP/JSON costs beside gRPC.

Everything runs side by side in one process tree on loopback: Redis, the echo
server, the ranker and the gateway (each its own process), and the load
generator (bench.loadgen, its own process). All of them share this machine's
CPUs; the table says how many there are.

``python -m bench.serve [--quick]``; results in bench/results/serve.json.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import report, world
from services.stack.embedded import EmbeddedRedis, die_with_parent, free_port
from services.common.infra import connect_redis
from services.stack.local import ServiceStack
from services.stack.processes import grpc_serving

CONCURRENCY = (1, 16, 64)
TARGETS = ("echo", "ranker", "gateway", "http")
LOADGEN_KIND = {"echo": "gateway", "ranker": "ranker", "gateway": "gateway", "http": "http"}


def _loadgen(kind: str, addr: str, users: list[str], concurrency: int, requests: int, seconds: float) -> dict:
    cmd = [sys.executable, "-m", "bench.loadgen", "--kind", kind, "--addr", addr, "--concurrency", str(concurrency),
           "--requests", str(requests), "--seconds", str(seconds)]
    if kind == "http":  # the HTTP/JSON twin of the gRPC load generator: same options, same output
        cmd = [sys.executable, "-m", "bench.http_loadgen", *cmd[cmd.index("--addr"):]]
    out = subprocess.run(cmd, input=json.dumps(users), capture_output=True, text=True, check=True,
                         timeout=seconds + 60, cwd=world.REPO)
    return json.loads(out.stdout)


@contextlib.contextmanager
def _echo_server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.echo", "--port", str(port)], cwd=world.REPO,
                            start_new_session=True, preexec_fn=die_with_parent)
    try:
        addr = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not grpc_serving(addr):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("echo server did not start")
            time.sleep(0.1)
        yield addr
    finally:
        proc.terminate()
        proc.wait(10)


def run(quick: bool, models: Path | None, users_n: int, rounds: int) -> dict:
    seconds, requests = (3.0, 20_000) if quick else (10.0, 200_000)
    models = world.models_dir(models)
    sequences = world.sequences_for(models)
    chosen = list(sequences)[:users_n]
    rows = []
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(EmbeddedRedis(data_dir=Path(stack.enter_context(tempfile.TemporaryDirectory()))))

        async def populate():
            client = connect_redis(redis_server.url)
            try:
                return await world.populate_users(client, models, sequences, chosen)
            finally:
                await client.aclose()

        users = asyncio.run(populate())
        log_dir = Path(tempfile.mkdtemp(prefix="shopstream-bench-serve-"))
        # No broker: the ranker and gateway never touch Kafka on this path (TrackEvents is not called).
        services = ServiceStack(kafka=f"127.0.0.1:{free_port()}", redis=redis_server.url, models_dir=models,
                                log_dir=log_dir, extra_env={"SHOPSTREAM_GATEWAY_LOG_LEVEL": "WARNING",
                                                            "SHOPSTREAM_RANKER_LOG_LEVEL": "WARNING"})
        stack.callback(services.stop)
        services.start_service("ranker")
        services.start_service("gateway")
        echo_addr = stack.enter_context(_echo_server())
        addrs = {"echo": echo_addr, "ranker": services.ranker_addr, "gateway": services.gateway_addr,
                 "http": services.gateway_http_url}
        print(f"==> {len(users)} users in Redis, model {models}; {os.cpu_count()} CPUs shared by Redis, echo, "
              f"ranker, gateway and the load generator", flush=True)
        for round_ in range(1, rounds + 1):
            # Per concurrency, echo, ranker and gateway run back to back (seconds apart), so a
            # ratio within one round compares like with like; the rounds show the spread.
            for c in CONCURRENCY:
                for target in TARGETS:
                    res = _loadgen(LOADGEN_KIND[target], addrs[target], users, c, requests, seconds)
                    n = len(res["latencies_s"])
                    row = {"round": round_, "target": target, "concurrency": c, "requests": n,
                           "rps": n / res["elapsed_s"] if res["elapsed_s"] else 0.0,
                           **report.percentiles_ms(res["latencies_s"]),
                           "errors": sum(res["errors"].values()), "degraded": res["degraded"]}
                    if res["errors"]:
                        row["error_codes"] = res["errors"]
                    rows.append(row)
                    print(f"    round {round_} {target:<8} c={c:<3} {row['rps']:8.0f} req/s  p50 {row['p50_ms']:.2f} ms"
                          f"  p99 {row['p99_ms']:.2f} ms  errors {row['errors']}  degraded {row['degraded']}",
                          flush=True)
    return {"rows": rows, "quick": quick, "rounds": rounds, "users": len(chosen), "seconds_per_run": seconds,
            "max_requests_per_run": requests, "model": str(models), "targets": _targets(rows),
            "notes": f"{os.cpu_count()} CPUs shared by Redis, the echo server, ranker, gateway and the load generator "
                     "(a separate process); closed loop, loopback only"}


def _targets(rows: list[dict]) -> dict:
    """The two target ratios per round (echo and gateway measured back to back) and their medians."""
    by = {(r["round"], r["target"], r["concurrency"]): r for r in rows}
    rounds = sorted({r["round"] for r in rows})
    rps = [by[(n, "gateway", 64)]["rps"] / by[(n, "echo", 64)]["rps"] for n in rounds]
    p99 = [by[(n, "gateway", 16)]["p99_ms"] / by[(n, "echo", 16)]["p99_ms"] for n in rounds]
    rps_ratio, p99_ratio = float(statistics.median(rps)), float(statistics.median(p99))
    # What HTTP/JSON costs: the HTTP row over the gRPC gateway row of the same round, per concurrency.
    http = {f"c{c}": {"rps": float(statistics.median(by[(n, "http", c)]["rps"] / by[(n, "gateway", c)]["rps"]
                                                     for n in rounds)),
                      "p99": float(statistics.median(by[(n, "http", c)]["p99_ms"] / by[(n, "gateway", c)]["p99_ms"]
                                                     for n in rounds))}
            for c in sorted({r["concurrency"] for r in rows})}
    return {"gateway_rps_over_echo_at_c64": rps_ratio, "gateway_rps_target_met": rps_ratio >= 0.5,
            "gateway_p99_over_echo_at_c16": p99_ratio, "gateway_p99_target_met": p99_ratio <= 3.0,
            "per_round_rps_over_echo_at_c64": rps, "per_round_p99_over_echo_at_c16": p99,
            "http_over_grpc_gateway": http}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per run instead of 10 s")
    parser.add_argument("--models-dir", type=Path)
    parser.add_argument("--users", type=int, default=2000, help="users with state in Redis")
    # Five rounds: on a shared 2-core box one round's gateway/echo ratio ranged 0.44-0.76
    # within a single run, so the median of three still moved by +-0.08 between runs.
    parser.add_argument("--rounds", type=int, default=5, help="times every target and concurrency is run")
    parser.add_argument("--name", default="serve", help="results file: bench/results/<name>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args.quick, args.models_dir, args.users, args.rounds)
    print()
    print(report.table(result["rows"], ["round", "target", "concurrency", "requests", "rps", "p50_ms", "p99_ms",
                                         "errors", "degraded"]))
    t = result["targets"]
    print(f"\nper round: gateway/echo requests/s at c=64 "
          f"{', '.join(f'{x:.2f}' for x in t['per_round_rps_over_echo_at_c64'])}; gateway/echo p99 at c=16 "
          f"{', '.join(f'{x:.2f}' for x in t['per_round_p99_over_echo_at_c16'])}")
    print(f"median: gateway/echo requests/s at c=64: {t['gateway_rps_over_echo_at_c64']:.2f} (target >= 0.5: "
          f"{'met' if t['gateway_rps_target_met'] else 'MISSED'}); gateway/echo p99 at c=16: "
          f"{t['gateway_p99_over_echo_at_c16']:.2f} (target <= 3: {'met' if t['gateway_p99_target_met'] else 'MISSED'})")
    print("HTTP/JSON over gRPC (gateway Recommend, median of rounds): " + "; ".join(
        f"{c}: requests/s x{v['rps']:.2f}, p99 x{v['p99']:.2f}" for c, v in t["http_over_grpc_gateway"].items()))
    print(f"results: {report.write(args.name, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
