"""Closed-loop HTTP/JSON load generator for the gateway's HTTP API (POST /v1/recommend):
the twin of bench.loadgen (same options, same JSON on stdout), so that bench.serve puts
the HTTP row beside the gRPC one.

``concurrency`` async clients, each on its own keep-alive HTTP/1.1 connection (HTTP/1.1
has no multiplexing), each sending its next request when the previous answer arrived, for
at most ``requests`` requests or ``seconds`` seconds, after a short warm-up. The client
is a minimal one on asyncio streams (requests prepared as bytes, answers read by their
Content-Length and parsed with json.loads), so that on a shared machine the load
generator takes as little CPU from the server as the gRPC one's C core does; a full
client library (aiohttp's) costs several times more per request.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from urllib.parse import urlsplit

from bench.loadgen import Outcome, closed_loop


def _requests(host: str, port: int, users: list[str], k: int, timeout: float) -> list[bytes]:
    out = []
    for user in users:
        body = json.dumps({"userId": user, "k": k}).encode()
        # The same deadline the gRPC load generator sets, in the header the gateway reads.
        head = (f"POST /v1/recommend HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                f"grpc-timeout: {int(timeout * 1000)}m\r\nContent-Length: {len(body)}\r\n\r\n")
        out.append(head.encode() + body)
    return out


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def run(url: str, users: list[str], concurrency: int, requests: int, seconds: float,
              warmup_s: float = 0.5, k: int = 10, timeout: float = 1.0) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    prepared = _requests(host, port, users, k, timeout)
    connections = [await asyncio.open_connection(host, port) for _ in range(concurrency)]

    async def send(n: int, i: int) -> Outcome:
        reader, writer = connections[n]
        try:
            status, body = await asyncio.wait_for(_exchange(reader, writer, prepared[i % len(prepared)]), timeout + 5)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            writer.close()
            connections[n] = await asyncio.open_connection(host, port)
            return type(exc).__name__, False
        answer = json.loads(body)
        if status != 200:
            return answer.get("error", {}).get("code", str(status)), False
        return None, bool(answer.get("degraded"))

    try:
        return await closed_loop(send, concurrency, requests, seconds, warmup_s)
    finally:
        for _, writer in connections:
            writer.close()


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
