"""Closed-loop HTTP/JSON load generator for the gateway's HTTP API (POST /v1/recommend):
the twin of bench.loadgen (same options, same JSON on stdout), so that bench.serve puts
the HTTP row beside the gRPC one.

``concurrency`` async clients, each on its own keep-alive connection (HTTP/1.1 has no
multiplexing), each sending its next request when the previous answer arrived, for at
most ``requests`` requests or ``seconds`` seconds, after a short warm-up. Bodies are
serialized once up front; every answer is parsed, as a storefront would.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp


async def run(url: str, users: list[str], concurrency: int, requests: int, seconds: float,
              warmup_s: float = 0.5, k: int = 10, timeout: float = 1.0) -> dict:
    bodies = [json.dumps({"userId": u, "k": k}).encode() for u in users]
    # The same deadline the gRPC load generator sets, in the header the gateway reads.
    headers = {"Content-Type": "application/json", "grpc-timeout": f"{int(timeout * 1000)}m"}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    degraded = 0
    counter = 0
    measuring = False
    stop_at = 0.0
    endpoint = url.rstrip("/") + "/v1/recommend"

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=timeout + 5)) as session:

        async def client() -> None:
            nonlocal counter, degraded
            while True:
                now = time.perf_counter()
                if measuring and (now >= stop_at or len(latencies) + sum(errors.values()) >= requests):
                    return
                if not measuring and now >= stop_at:
                    return
                i = counter
                counter += 1
                start = time.perf_counter()
                try:
                    async with session.post(endpoint, data=bodies[i % len(bodies)], headers=headers) as resp:
                        answer = await resp.json()
                        status = resp.status
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    if measuring:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                if status != 200:
                    if measuring:
                        code = answer.get("error", {}).get("code", str(status))
                        errors[code] = errors.get(code, 0) + 1
                    continue
                if measuring:
                    latencies.append(time.perf_counter() - start)
                    if answer.get("degraded"):
                        degraded += 1

        stop_at = time.perf_counter() + warmup_s
        await asyncio.gather(*(client() for _ in range(concurrency)))
        measuring = True
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"latencies_s": latencies, "errors": errors, "degraded": degraded, "elapsed_s": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="base URL of the gateway's HTTP API, e.g. http://127.0.0.1:8080")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args()
    users = json.loads(sys.stdin.read())
    result = asyncio.run(run(args.addr, users, args.concurrency, args.requests, args.seconds, args.warmup))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
