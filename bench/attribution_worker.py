"""``python -m bench.attribution_worker``: what attributing one impression costs the features worker.

A features worker (attribution on) against an embedded broker and Redis; ``--impressions``
impressions of 10 items for 997 users are published through the gateway's own producer
(``KafkaImpressions``) first, then the worker is timed while it attributes the backlog: its
CPU and Redis's per impression, and impressions per second. With ``--profile`` (py-spy
installed) the worker is sampled meanwhile and the functions holding the most samples are
listed: how much is the attribution code and how much faust's and aiokafka's per-record path.
Results in bench/results/attribution_worker.json.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from shopstream.events.v1 import events_pb2

from bench import report, world
from services.contract.producer import ensure_topics
from services.gateway.impressions import KafkaImpressions
from services.stack.embedded import EmbeddedKafka, EmbeddedRedis
from services.stack.local import ServiceStack

# Where a sampled stack is counted as the attribution code's own, or as faust's / aiokafka's.
OURS = "services/features/attribution"


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _attributed(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith("shopstream_attribution_impressions_total"))


async def _publish(bootstrap: str, n: int) -> None:
    producer = KafkaImpressions(bootstrap, 30.0)
    try:
        batch = []
        for i in range(n):
            imp = events_pb2.Impression(recommendation_id=uuid.uuid4().hex, user_id=f"bench-user-{i % 997}",
                                        variant="model", model_version="bench", surface="recommend",
                                        item_ids=[f"B00{j:07d}" for j in range(10)])
            imp.served_at.FromNanoseconds(time.time_ns())
            batch.append(imp)
            if len(batch) == 500 or i == n - 1:
                await producer.send(batch)
                batch = []
    finally:
        await producer.close()


# Where a sample's innermost frame is, by path: the attribution code, or the library it is in.
PLACES = (("attribution code", "services/features/attribution"), ("features agents", "services/features/"),
          ("faust", "/faust/"), ("aiokafka", "/aiokafka/"), ("redis client", "/redis/"), ("mode", "/mode/"),
          ("asyncio", "/asyncio/"), ("protobuf", "/protobuf/"))


def _profile_summary(raw: Path) -> dict:
    """Share of samples through the attribution code, and of samples by where their innermost
    frame is (``PLACES``; idle waits in the selector count as "idle")."""
    places, total, through = collections.Counter(), 0, 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        through += n if OURS in stack else 0
        function, _, where = stack.split(";")[-1].partition(" (")
        if "select" in function.lower():
            places["idle"] += n
            continue
        where = "/" + where  # py-spy names library files relative to site-packages
        places[next((name for name, path in PLACES if path in where), "other")] += n
    return {"samples": total, "attribution_code_share": through / total if total else 0.0,
            "innermost": [{"where": k, "share": v / total} for k, v in places.most_common()]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attribution_worker", description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=40_000)
    parser.add_argument("--profile", action="store_true", help="sample the worker with py-spy (if installed)")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or (str(Path(sys.executable).parent / "py-spy")
                                     if (Path(sys.executable).parent / "py-spy").exists() else None)
    with tempfile.TemporaryDirectory(prefix="shopstream-bench-attr-") as tmp_name:
        tmp = Path(tmp_name)
        with EmbeddedRedis(data_dir=tmp / "redis") as redis, EmbeddedKafka() as broker:
            ensure_topics(broker.bootstrap_servers, 4)
            stack = ServiceStack(kafka=broker.bootstrap_servers, redis=redis.url, models_dir=world.models_dir(None),
                                 log_dir=tmp / "logs", partitions=4,
                                 extra_env={"SHOPSTREAM_FEATURES_LOG_LEVEL": "WARNING",
                                            "SHOPSTREAM_FEATURES_ATTRIBUTION_ENABLED": "true"})
            stack.start_service("features")
            try:
                pid, port = stack.processes["features"].proc.pid, stack.ports["features_metrics"]
                os.kill(pid, signal.SIGSTOP)  #: the whole backlog is published before the worker sees it
                try:
                    asyncio.run(_publish(broker.bootstrap_servers, args.impressions))
                finally:
                    os.kill(pid, signal.SIGCONT)
                sampler = None
                if args.profile and spy:
                    sampler = subprocess.Popen([spy, "record", "-p", str(pid), "-r", "200", "-f", "raw", "-o",
                                                str(tmp / "spy.txt"), "--nonblocking"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                cpu0, redis0, start = _cpu_s(pid), _cpu_s(redis.pid), time.monotonic()
                while _attributed(port) < args.impressions:
                    if time.monotonic() - start > 300:
                        raise RuntimeError("the worker did not attribute the backlog within 300 s")
                    time.sleep(0.1)
                seconds = time.monotonic() - start
                cpu, redis_cpu = _cpu_s(pid) - cpu0, _cpu_s(redis.pid) - redis0
                profile = None
                if sampler is not None:
                    sampler.send_signal(signal.SIGINT)  # py-spy writes what it sampled
                    sampler.wait(timeout=60)
                    profile = _profile_summary(tmp / "spy.txt")
            finally:
                stack.stop()
    row = {"impressions": args.impressions, "seconds": seconds, "impressions_per_s": args.impressions / seconds,
           "worker_cpu_us_per_impression": 1e6 * cpu / args.impressions,
           "redis_cpu_us_per_impression": 1e6 * redis_cpu / args.impressions}
    print(report.table([row], list(row)))
    if profile is not None:
        print(f"attribution code in {100 * profile['attribution_code_share']:.1f}% of {profile['samples']} samples")
        print(report.table(profile["innermost"], ["where", "share"]))
    elif args.profile:
        print("no py-spy on PATH: no profile")
    print(f"results: {report.write('attribution_worker', {'result': row, 'profile': profile})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
