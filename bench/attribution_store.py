"""``python -m bench.attribution_store``: the two ways the attribution store writes a batch, side by side.

On one embedded Redis (valkey, append-only file on, as the stack runs it), batches of 160 served lists go through
``RedisAttributionStore.write`` the outbox way (three steps: one join script call per user,
one apply call, one clear per user; what a Redis Cluster needs) and the one-call way (one
atomic script call per chunk of whole users: a single Redis), alternating per round, each
with users of its own. Measured per list: this process's CPU (the client: packing, parsing
replies) and the Redis process's CPU. Two shapes: every list from another user (what the
gateway's traffic looks like to one attribution batch) and 20 lists per user.
Results in bench/results/attribution_store.json.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench import report
from services.common.infra import connect_redis
from services.features.attribution_store import ImpressionRecord, RedisAttributionStore
from services.stack.embedded import EmbeddedRedis

LISTS_PER_BATCH = 160  # about what the attribution agent batches at 800 lists/s (200 ms window)
WAYS = {"outbox": True, "one call": False}


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(redis, redis_pid: int, outbox: bool, users: int, batches: int, tag: str) -> tuple[float, float]:
    store = RedisAttributionStore(redis, outbox=outbox)
    now = int(time.time() * 1000)
    items = tuple(f"B00{j:07d}" for j in range(10))
    cpu0, redis0, n = time.process_time(), _cpu_s(redis_pid), 0
    for b in range(batches):
        lists = [ImpressionRecord(uuid.uuid4().hex, f"{tag}-u{(b * LISTS_PER_BATCH + i) % users}", "model", "", now,
                                  items) for i in range(LISTS_PER_BATCH)]
        await store.write(lists)
        n += len(lists)
    return 1e6 * (time.process_time() - cpu0) / n, 1e6 * (_cpu_s(redis_pid) - redis0) / n


async def _run(redis_url: str, redis_pid: int, rounds: int, batches: int) -> list[dict]:
    redis = connect_redis(redis_url)
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for round_ in range(rounds):
            for shape, users in (("1 list per user", 100_000), ("20 lists per user", LISTS_PER_BATCH // 20)):
                for way, outbox in WAYS.items():
                    tag = f"{way.replace(' ', '')}-{shape[:2].strip()}-{round_}"
                    samples.setdefault((shape, way), []).append(
                        await _measure(redis, redis_pid, outbox, users, batches, tag))
    finally:
        await redis.aclose()
    rows = []
    for (shape, way), got in samples.items():
        rows.append({"shape": shape, "way": way, "client_cpu_us_per_list": statistics.median(c for c, _ in got),
                     "redis_cpu_us_per_list": statistics.median(r for _, r in got)})
    for row in rows:
        base = next(r for r in rows if r["shape"] == row["shape"] and r["way"] == "outbox")
        row["client_ratio"] = row["client_cpu_us_per_list"] / base["client_cpu_us_per_list"]
        row["redis_ratio"] = row["redis_cpu_us_per_list"] / base["redis_cpu_us_per_list"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attribution_store", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="each way and shape once per round (medians)")
    parser.add_argument("--batches", type=int, default=40, help=f"batches of {LISTS_PER_BATCH} lists per measurement")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shopstream-bench-attr-store-") as tmp, \
            EmbeddedRedis(data_dir=Path(tmp) / "redis") as redis:  # durable (append-only file), as deployed
        rows = asyncio.run(_run(redis.url, redis.pid, args.rounds, args.batches))
    print(report.table(rows, list(rows[0])))
    print(f"results: {report.write('attribution_store', {'rows': rows, 'rounds': args.rounds, 'batches': args.batches, 'lists_per_batch': LISTS_PER_BATCH})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
