"""Closed-loop gRPC load generator: ``concurrency`` async clients, each sending its
next request when the previous answer arrived, for at most ``requests`` requests
or ``seconds`` seconds (whichever ends first), after a short warm-up.

Runs in its own process (``python -m bench.loadgen``) so the servers' event loops
and the client's do not share one interpreter; on a 2-core machine they still
share the CPUs, which the serve benchmark reports.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable

import grpc
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shopstream.ranker.v1 import ranker_pb2, ranker_pb2_grpc

# One HTTP/2 connection per this many clients; grpc.aio multiplexes the rest.
CLIENTS_PER_CHANNEL = 16


def _caller(kind: str, channel: grpc.aio.Channel, users: list[str], k: int):
    """A function (i -> awaitable) sending the i-th request of this target."""
    if kind == "ranker":
        stub = ranker_pb2_grpc.RankerServiceStub(channel)
        # The filters the gateway sends by default (in stock, purchases excluded).
        flt = ranker_pb2.ItemFilter(in_stock_only=True, exclude_purchased=True)
        reqs = [ranker_pb2.RankRequest(user_id=u, k=k, filter=flt) for u in users]
        return lambda i, timeout: stub.Rank(reqs[i % len(reqs)], timeout=timeout)
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    reqs = [gateway_pb2.RecommendRequest(user_id=u, k=k) for u in users]
    return lambda i, timeout: stub.Recommend(reqs[i % len(reqs)], timeout=timeout)


# One request's outcome, as ``closed_loop`` counts it: an error name (None: answered) and
# whether the answer was degraded.
Outcome = tuple[str | None, bool]


async def closed_loop(send: Callable[[int, int], Awaitable[Outcome]], concurrency: int, requests: int,
                      seconds: float, warmup_s: float) -> dict:
    """``concurrency`` clients, client n sending request i with ``send(n, i)`` when its previous
    answer arrived: first ``warmup_s`` seconds uncounted, then at most ``requests`` requests or
    ``seconds`` seconds. Returns the latencies of the answers, errors by name, the degraded
    count and the measured wall time (the JSON both load generators print)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    degraded = 0
    counter = 0
    measuring = False
    stop_at = 0.0

    async def client(n: int) -> None:
        nonlocal counter, degraded
        while True:
            if time.perf_counter() >= stop_at or (measuring and len(latencies) + sum(errors.values()) >= requests):
                return
            i = counter
            counter += 1
            start = time.perf_counter()
            error, was_degraded = await send(n, i)
            if not measuring:
                continue
            if error is not None:
                errors[error] = errors.get(error, 0) + 1
            else:
                latencies.append(time.perf_counter() - start)
                degraded += was_degraded

    stop_at = time.perf_counter() + warmup_s
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    measuring = True
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return {"latencies_s": latencies, "errors": errors, "degraded": degraded,
            "elapsed_s": time.perf_counter() - started}


async def run(kind: str, addr: str, users: list[str], concurrency: int, requests: int, seconds: float,
              warmup_s: float = 0.5, k: int = 10, timeout: float = 1.0) -> dict:
    channels = [grpc.aio.insecure_channel(addr) for _ in range(max(1, -(-concurrency // CLIENTS_PER_CHANNEL)))]
    callers = [_caller(kind, ch, users, k) for ch in channels]

    async def send(n: int, i: int) -> Outcome:
        try:
            resp = await callers[n % len(callers)](i, timeout)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, False
        return None, bool(getattr(resp, "degraded", False))

    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), 10)
        return await closed_loop(send, concurrency, requests, seconds, warmup_s)
    finally:
        for ch in channels:
            await ch.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--kind", choices=("gateway", "ranker"), required=True)
    parser.add_argument("--addr", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args()
    users = json.loads(sys.stdin.read())
    result = asyncio.run(run(args.kind, args.addr, users, args.concurrency, args.requests, args.seconds,
                             args.warmup))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
