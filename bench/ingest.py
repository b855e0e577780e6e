"""Ingest benchmark: one features worker, with embedding refresh.

1. Throughput: N events (real users' sequences, interleaved) are pre-loaded
   into the events topic, then ONE worker starts; the clock runs from its first
   applied event (its ``events_applied_total`` metric) until all N are applied,
   and on until every user's embedding in Redis is current (``hist_version``
   of the embedding = the user's), i.e. the refresh has caught up too.
2. Freshness: with the worker, ranker and gateway up and a background replay
   at a steady rate (default 1,000 events/s), probe users each get a purchase
   of the item at the top of their recommendations; the time from producing
   that event to the gateway no longer recommending the item (purchases are
   excluded) is the freshness of one probe: Kafka, worker, Redis, ranker and
   gateway included.

``python -m bench.ingest [--quick]``; results in bench/results/ingest.json.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc
import redis as redis_sync
from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from shopstream.events.v1 import events_pb2
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from bench import report, world
from services.common.infra import connect_redis
from services.common.stores import keys
from services.common.stores.recovery_marks import RedisRecoveryMarks
from services.contract import topics
from services.contract.producer import EventProducer, ensure_topics
from services.features.recovery import mark_field
from services.ingest.replay import replay, to_events
from services.stack.local import ServiceStack, infrastructure
from services.stack.processes import metric_value, metrics_text

PARTITIONS = 4


def _metric(stack: ServiceStack, name: str) -> float:
    # Only this metric: a full exposition (process collector, every histogram) rendered
    # 20 times a second cost the worker ~10% of its samples in a py-spy profile.
    text = metrics_text(stack.ports["features_metrics"], names=[name])
    return (metric_value(text, name) or 0.0) if text else 0.0


def _stale_embeddings(client: redis_sync.Redis, users: list[str]) -> list[str]:
    """The users whose stored embedding does not have their current ``hist_version``."""
    pipe = client.pipeline(transaction=False)
    for u in users:
        pipe.hget(keys.counters(u), "hist_version")
        pipe.hget(keys.embedding(u), "hist_version")
    raw = pipe.execute()
    return [u for u, hv, ehv in zip(users, raw[::2], raw[1::2]) if hv is None or hv != ehv]


def start_at_end(kafka: str, redis_url: str, group: str) -> int:
    """Start consumer group ``group`` at the end of the events topic; returns the events there.

    The worker's consumer starts a new group at the earliest offset, so without this every
    worker of a run would first consume all that earlier phases (and earlier runs on the same
    broker) left in the topic: 20,000 events before the freshness phase, duplicates that
    still go through the worker and delay the probes by as long as that takes. The group is
    committed at the end offsets, and the recovery marks (services/features/recovery.py)
    say Redis holds everything below them, as it does for this run: otherwise the worker
    would take the commit without marks for lost state and replay the log.
    """
    consumer = KafkaConsumer(bootstrap_servers=kafka.split(","), group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topics.EVENTS, p) for p in sorted(consumer.partitions_for_topic(topics.EVENTS) or ())]
        ends = consumer.end_offsets(tps)
        consumer.commit({tp: OffsetAndMetadata(ends[tp], "", -1) for tp in tps})
    finally:
        consumer.close()

    async def set_marks():
        client = connect_redis(redis_url)
        try:
            await RedisRecoveryMarks(client).set({mark_field(tp): end for tp, end in ends.items()})
        finally:
            await client.aclose()

    asyncio.run(set_marks())
    return sum(ends.values())


def throughput(kafka: str, redis_url: str, models: Path, sequences: dict, events_n: int, log_dir: Path) -> dict:
    ns = uuid.uuid4().hex[:8]
    chosen, total = {}, 0
    for u, seq in sequences.items():
        if total >= events_n:
            break
        chosen[f"{ns}-{u}"] = seq
        total += len(seq)
    app_id = f"bench-ingest-{ns}"
    start_at_end(kafka, redis_url, app_id)  # the worker consumes exactly the events pre-loaded now
    print(f"==> pre-loading {total} events of {len(chosen)} users into the topic", flush=True)
    with EventProducer(kafka) as producer:
        replay(producer, chosen, rate=None, batch_size=1000)
    env = {"SHOPSTREAM_FEATURES_APP_ID": app_id, "SHOPSTREAM_FEATURES_LOG_LEVEL": "WARNING"}
    stack = ServiceStack(kafka, redis_url, models, log_dir, partitions=PARTITIONS, extra_env=env)
    client = redis_sync.Redis.from_url(redis_url)
    users = list(chosen)
    try:
        stack.start_service("features", timeout=120)
        first = applied_at = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            applied = _metric(stack, "shopstream_features_events_applied_total")
            now = time.perf_counter()
            if first is None and applied > 0:
                first, first_count = now, applied
            if applied >= total:
                applied_at = now
                break
            time.sleep(0.05)  # each scrape costs the worker ~2 ms of its event loop's core
        # No events arrive any more, so a current embedding stays current: each poll asks
        # only about the users still stale (the whole list every 50 ms was ~60k HGETs/s on
        # the Redis the worker writes to).
        stale = users
        while time.monotonic() < deadline and stale:
            stale = _stale_embeddings(client, stale)
            if stale:
                time.sleep(0.05)
        embedded_at = time.perf_counter()
        current = len(users) - len(_stale_embeddings(client, users))
        written = _metric(stack, "shopstream_features_embeddings_written_total")
        # Events applied before the first observation are not in the timed window.
        timed = total - first_count
        apply_s = applied_at - first
        all_s = embedded_at - first
    finally:
        stack.stop()
        client.close()
    return {"events": total, "users": len(users), "timed_events": timed, "apply_seconds": apply_s,
            "events_per_s": timed / apply_s if apply_s > 0 else float("nan"),
            "with_embeddings_seconds": all_s,
            "events_per_s_until_embeddings_current": timed / all_s if all_s > 0 else float("nan"),
            "embeddings_written": written, "users_with_current_embedding": current}


def _event(user: str, item: str, type_code: int) -> events_pb2.Event:
    ts = Timestamp()
    ts.GetCurrentTime()
    return events_pb2.Event(event_id=uuid.uuid4().hex, user_id=user, item_id=item, type=type_code,
                            occurred_at=ts, session_id=f"{user}-probe")


def freshness(kafka: str, redis_url: str, models: Path, sequences: dict, rate: float, probes: int,
              log_dir: Path) -> dict:
    ns = uuid.uuid4().hex[:8]
    names = list(sequences)
    probe_src, background_src = names[:probes], names[probes:]
    app_id = f"bench-fresh-{ns}"
    start_at_end(kafka, redis_url, app_id)  # only this phase's events: steady state at ``rate``, no backlog
    env = {"SHOPSTREAM_FEATURES_APP_ID": app_id, "SHOPSTREAM_FEATURES_LOG_LEVEL": "WARNING",
           "SHOPSTREAM_GATEWAY_LOG_LEVEL": "WARNING", "SHOPSTREAM_RANKER_LOG_LEVEL": "WARNING"}
    stack = ServiceStack(kafka, redis_url, models, log_dir, partitions=PARTITIONS, extra_env=env)

    async def seed():
        client = connect_redis(redis_url)
        try:
            return await world.populate_users(client, models, sequences, probe_src, prefix=f"probe-{ns}")
        finally:
            await client.aclose()

    probe_users = asyncio.run(seed())
    stop = threading.Event()
    sent = [0]

    def background():
        with EventProducer(kafka) as producer:
            per_pass = 200  # users per replay pass, so the replay never runs dry
            i = 0
            while not stop.is_set():
                batch = {f"bg-{ns}-{i}-{u}": sequences[u] for u in background_src[(i * per_pass) % len(background_src):][:per_pass]}
                i += 1
                for chunk in _paced(to_events(batch), rate, stop):
                    sent[0] += producer.send_events(chunk, wait=False)

    latencies, timeouts = [], 0
    try:
        stack.start()
        thread = threading.Thread(target=background, daemon=True)
        thread.start()
        time.sleep(2.0)  # the replay reaches its steady rate
        started_bg = (time.perf_counter(), sent[0])
        with grpc.insecure_channel(stack.gateway_addr) as channel, EventProducer(kafka, linger_ms=0) as producer:
            gw = gateway_pb2_grpc.GatewayServiceStub(channel)
            for user in probe_users:
                before = gw.Recommend(gateway_pb2.RecommendRequest(user_id=user, k=10), timeout=2)
                if before.strategy != gateway_pb2.STRATEGY_PERSONALIZED or not before.items:
                    continue
                top = before.items[0].item_id
                t0 = time.perf_counter()
                producer.send_events([_event(user, top, 4)], wait=False)
                producer.flush()
                while True:
                    resp = gw.Recommend(gateway_pb2.RecommendRequest(user_id=user, k=10), timeout=2)
                    if top not in [it.item_id for it in resp.items]:
                        latencies.append(time.perf_counter() - t0)
                        break
                    if time.perf_counter() - t0 > 5.0:
                        timeouts += 1
                        break
                    time.sleep(0.002)
                time.sleep(0.05)
        bg_rate = (sent[0] - started_bg[1]) / (time.perf_counter() - started_bg[0])
        worker_p = _histogram_quantiles(metrics_text(stack.ports["features_metrics"]) or "",
                                        "shopstream_features_freshness_seconds")
    finally:
        stop.set()
        stack.stop()
    return {"rate_target": rate, "background_events_per_s": bg_rate, "probes": len(latencies),
            "probe_timeouts": timeouts, **report.percentiles_ms(latencies),
            "worker_kafka_to_redis_bucket_le_p50_ms": worker_p[0], "worker_kafka_to_redis_bucket_le_p99_ms": worker_p[1]}


def _paced(events, rate: float, stop: threading.Event, chunk: int = 20):
    """Chunks of events released at ``rate`` per second (absolute schedule, no drift)."""
    start, n, buf = time.perf_counter(), 0, []
    for ev in events:
        buf.append(ev)
        if len(buf) >= chunk:
            n += len(buf)
            yield buf
            buf = []
            if stop.is_set():
                return
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    if buf:
        yield buf


def _histogram_quantiles(text: str, name: str) -> tuple[float, float]:
    """Upper bucket bounds (ms) holding the 50th and 99th percentile of a Prometheus histogram."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return float("nan"), float("nan")
    total = buckets[-1][1]
    out = []
    for q in (0.5, 0.99):
        out.append(next(le for le, count in buckets if count >= q * total) * 1000.0)
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models-dir", type=Path)
    parser.add_argument("--events", type=int, help="events pre-loaded for the throughput run")
    parser.add_argument("--rate", type=float, default=1000.0, help="background events/s during the freshness run")
    parser.add_argument("--probes", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    events_n = args.events or (20_000 if args.quick else 100_000)
    probes = args.probes or (40 if args.quick else 200)
    models = world.models_dir(args.models_dir)
    sequences = world.sequences_for(models)
    log_dir = Path(tempfile.mkdtemp(prefix="shopstream-bench-ingest-"))
    load_before = os.getloadavg()
    with infrastructure() as (kafka, redis_url):
        ensure_topics(kafka, PARTITIONS)
        tp = throughput(kafka, redis_url, models, sequences, events_n, log_dir)
        print(report.table([tp], ["events", "users", "events_per_s", "events_per_s_until_embeddings_current",
                                  "embeddings_written", "users_with_current_embedding"]), flush=True)
        fr = freshness(kafka, redis_url, models, sequences, args.rate, probes, log_dir)
        print(report.table([fr], ["rate_target", "background_events_per_s", "probes", "probe_timeouts", "p50_ms",
                                  "p99_ms", "worker_kafka_to_redis_bucket_le_p99_ms"]), flush=True)
    targets = {"events_per_s_target_met": tp["events_per_s_until_embeddings_current"] >= 10_000,
               "freshness_p99_target_met": fr["p99_ms"] < 100.0}
    print(f"\nthroughput with embedding refresh: {tp['events_per_s_until_embeddings_current']:,.0f} events/s "
          f"(target >= 10,000: {'met' if targets['events_per_s_target_met'] else 'MISSED'}); freshness p99 "
          f"{fr['p99_ms']:.1f} ms at {fr['background_events_per_s']:.0f} events/s (target < 100 ms: "
          f"{'met' if targets['freshness_p99_target_met'] else 'MISSED'})")
    path = report.write("ingest", {"quick": args.quick, "model": str(models), "throughput": tp, "freshness": fr,
                                   "targets": targets, "load_average_before": load_before,
                                   "notes": f"{os.cpu_count()} CPUs shared by broker, Redis, worker, ranker, gateway "
                                            "and this process (producer + probes)"})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
