"""``python -m bench.attribution_worker``: what attributing one impression costs the features worker.

A features worker (attribution on) against an embedded broker and Redis; ``--impressions``
impressions of 10 items for 997 users are published first, then the worker is timed while it
attributes the backlog: its CPU and Redis's per impression, and impressions per second. Side
by side in one run, the two forms of the impressions topic's records: one list per record
(the contract's producer) and ``ImpressionBatch`` records (the gateway's producer, 500 lists
per publish), each on a fresh broker, Redis and worker. With ``--profile`` (py-spy
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
from services.contract.producer import EventProducer, ensure_topics
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


def _impressions(n: int) -> list[events_pb2.Impression]:
    out = []
    for i in range(n):
        imp = events_pb2.Impression(recommendation_id=uuid.uuid4().hex, user_id=f"bench-user-{i % 997}",
                                    variant="model", model_version="bench", surface="recommend",
                                    item_ids=[f"B00{j:07d}" for j in range(10)])
        imp.served_at.FromNanoseconds(time.time_ns())
        out.append(imp)
    return out


async def _publish_batches(bootstrap: str, impressions: list[events_pb2.Impression]) -> None:
    """As the gateway publishes: 500 lists per publish, one ImpressionBatch record per partition."""
    producer = KafkaImpressions(bootstrap, 30.0)
    try:
        for start in range(0, len(impressions), 500):
            await producer.send(impressions[start:start + 500])
    finally:
        await producer.close()


async def _publish_steadily(bootstrap: str, impressions: list[events_pb2.Impression], rate: float) -> None:
    """As the gateway publishes under steady traffic: every linger (0.1 s) what ``rate`` lists/s
    served in it, one ImpressionBatch record per partition."""
    producer = KafkaImpressions(bootstrap, 30.0)
    loop = asyncio.get_running_loop()
    start, sent = loop.time(), 0
    try:
        while sent < len(impressions):
            await asyncio.sleep(LINGER_S)
            due = min(len(impressions), int((loop.time() - start) * rate))
            if due > sent:
                await producer.send(impressions[sent:due])
                sent = due
    finally:
        await producer.close()


def _publish(bootstrap: str, form: str, impressions: list[events_pb2.Impression]) -> None:
    if form == BATCHES:
        asyncio.run(_publish_batches(bootstrap, impressions))
    else:  # one Impression per record, keyed by user: the contract's producer
        with EventProducer(bootstrap) as producer:
            producer.send_impressions(impressions)


BATCHES, RECORDS = "batch records", "one list per record"
LINGER_S = 0.1  # the gateway's default SHOPSTREAM_GATEWAY_IMPRESSIONS_LINGER_S
IDLE_S = 3.0  # the worker's own CPU with nothing to attribute, measured this long first


# Where a sample's innermost frame is, by path: the attribution code, or the library it is in.
PLACES = (("attribution code", "services/features/attribution"), ("features agents", "services/features/"),
          ("faust", "/faust/"), ("aiokafka", "/aiokafka/"), ("redis client", "/redis/"), ("mode", "/mode/"),
          ("asyncio", "/asyncio/"), ("protobuf", "/protobuf/"))


def _profile_summary(raw: Path) -> dict:
    """Share of samples through the attribution code, and of samples by where their innermost
    frame is (``PLACES``; idle waits in the selector count as "idle")."""
    places, functions, total, through = collections.Counter(), collections.Counter(), 0, 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        through += n if OURS in stack else 0
        function, _, where = stack.split(";")[-1].partition(" (")
        functions[f"{function} ({where}"] += n
        if "select" in function.lower():
            places["idle"] += n
            continue
        where = "/" + where  # py-spy names library files relative to site-packages
        places[next((name for name, path in PLACES if path in where), "other")] += n
    return {"samples": total, "attribution_code_share": through / total if total else 0.0,
            "innermost": [{"where": k, "share": v / total} for k, v in places.most_common()],
            "functions": [{"function": k, "share": v / total} for k, v in functions.most_common(25)]}


def measure(form: str, n: int, spy: str | None, rate: float = 0.0) -> tuple[dict, dict | None]:
    """A fresh broker, Redis and worker, and ``n`` lists published in ``form``: as a backlog
    while the worker is stopped, then the worker timed (and sampled with ``spy``) while it
    attributes it; or, with ``rate``, steadily at ``rate`` lists/s (batch records, as the gateway
    publishes them) while the worker attributes them as they come, timed until it caught up.
    The worker's and Redis's CPU with nothing to attribute (faust's polling, timers) is measured
    first and taken off."""
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
                impressions = _impressions(n)
                idle0, redis_idle0 = _cpu_s(pid), _cpu_s(redis.pid)
                time.sleep(IDLE_S)
                idle_cpu_per_s = (_cpu_s(pid) - idle0) / IDLE_S
                redis_idle_cpu_per_s = (_cpu_s(redis.pid) - redis_idle0) / IDLE_S
                if not rate:
                    os.kill(pid, signal.SIGSTOP)  #: the whole backlog is published before the worker sees it
                    try:
                        _publish(broker.bootstrap_servers, form, impressions)
                    finally:
                        os.kill(pid, signal.SIGCONT)
                sampler = None
                if spy:
                    sampler = subprocess.Popen([spy, "record", "-p", str(pid), "-r", "200", "-f", "raw", "-o",
                                                str(tmp / "spy.txt"), "--nonblocking"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                cpu0, redis0, start = _cpu_s(pid), _cpu_s(redis.pid), time.monotonic()
                if rate:
                    asyncio.run(_publish_steadily(broker.bootstrap_servers, impressions, rate))
                while _attributed(port) < n:
                    if time.monotonic() - start > 300:
                        raise RuntimeError("the worker did not attribute the lists within 300 s")
                    time.sleep(0.05)
                seconds = time.monotonic() - start
                cpu, redis_cpu = _cpu_s(pid) - cpu0, _cpu_s(redis.pid) - redis0
                profile = None
                if sampler is not None:
                    sampler.send_signal(signal.SIGINT)  # py-spy writes what it sampled
                    sampler.wait(timeout=60)
                    profile = _profile_summary(tmp / "spy.txt")
            finally:
                stack.stop()
    net, redis_net = (max(0.0, used - idle * seconds) for used, idle in ((cpu, idle_cpu_per_s),
                                                                         (redis_cpu, redis_idle_cpu_per_s)))
    row = {"records": form if not rate else f"{form}, {rate:g}/s", "impressions": n, "seconds": seconds,
           "impressions_per_s": n / seconds, "worker_idle_cpu_ms_per_s": 1e3 * idle_cpu_per_s,
           "redis_idle_cpu_ms_per_s": 1e3 * redis_idle_cpu_per_s,
           "worker_cpu_us_per_impression": 1e6 * net / n, "redis_cpu_us_per_impression": 1e6 * redis_net / n}
    return row, profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attribution_worker", description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=40_000)
    parser.add_argument("--rate", type=float, default=800.0,
                        help="lists/s of the steady run (about what the gateway serves in bench.loop_cost); 0: none")
    parser.add_argument("--profile", action="store_true", help="sample the worker with py-spy (if installed)")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or (str(Path(sys.executable).parent / "py-spy")
                                     if (Path(sys.executable).parent / "py-spy").exists() else None)
    if args.profile and not spy:
        print("no py-spy on PATH: no profile")
    runs = [(RECORDS, 0.0), (BATCHES, 0.0)] + ([(BATCHES, args.rate)] if args.rate else [])
    rows, profiles = [], {}
    for form, rate in runs:  # side by side, one run
        row, profile = measure(form, args.impressions if not rate else min(args.impressions, int(rate * 20)),
                               spy if args.profile else None, rate)
        rows.append(row)
        if profile is not None:
            profiles[row["records"]] = profile
    base = rows[0]
    for row in rows:
        row["worker_cpu_ratio"] = row["worker_cpu_us_per_impression"] / base["worker_cpu_us_per_impression"]
    print(report.table(rows, list(rows[-1])))
    for form, profile in profiles.items():
        print(f"{form}: attribution code in {100 * profile['attribution_code_share']:.1f}% of "
              f"{profile['samples']} samples")
        print(report.table(profile["innermost"], ["where", "share"]))
        print(report.table(profile["functions"][:12], ["function", "share"]))
    print(f"results: {report.write('attribution_worker', {'rows': rows, 'profiles': profiles})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
