"""Scaling benchmark: what each unit of work costs as it grows. ``python -m bench.scale [--quick]``.

In one run, on this machine:

1. **Redis memory per user and per item**: users written as the features worker writes them
   (the apply script with 32-hex event ids, then the embedding), at the dataset's history
   lengths ("typical") and at the history cap ("heavy": 200 events each); catalog items
   (CatalogItem with title, brand, attributes) and their trending entries. Bytes from
   ``INFO memory`` (used_memory) deltas, the per-key split from ``MEMORY USAGE`` on a sample;
   projected to 10M users and 1M items, and to the cluster masters that holds.
2. **features throughput, 1 vs 2 workers** in one consumer group on a 4-partition topic:
   the workers start first (partitions assigned), then N events go in; events applied per
   second from the first applied to the last (embedding refresh running as in production).
3. **ranker scoring latency at 12K / 100K / 1M / 5M items**: exact (the ranker's onnxruntime
   scorer) at every size, and ANN (faiss IVF-Flat, as the ranker builds it above
   ``ann_min_items``) at 1M and 5M, with nprobe calibrated to recall@10 >= 0.95 and recall
   measured on held-out queries against exact search.
4. **embedding refresh vs users**: encode (the features worker's ``bundle.encode``) and
   write (``put_embeddings``) of N users' embeddings for growing N: a full refresh, as after
   a model change, and the per-user cost of the steady state.

Prints tables and writes bench/results/scale.json; every figure is measured in this run.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import redis as redis_sync

from bench import world
from bench.report import percentiles_ms, table, write
from services.common.bundle import latest_version, load_bundle
from services.common.infra import connect_redis
from services.common.stores import keys
from services.common.stores.catalog import RedisCatalogStore
from services.common.stores.trending import RedisTrendingStore
from services.common.stores.user_state import EmbeddingWrite, EventWrite, RedisUserStateStore
from services.stack.embedded import EmbeddedRedis

K = 10
THREADS = 2
USERS_10M, ITEMS_1M = 10_000_000, 1_000_000
# What one Redis Cluster master holds: a 32 GiB node at a maxmemory of 75% (room for
# fork-less AOF rewrite buffers, replication backlog and fragmentation).
MASTER_USABLE_BYTES = int(32 * 2**30 * 0.75)
USER_KEYS = {"hist": keys.history, "purchased": keys.purchased, "counts": keys.counters, "dedup": keys.dedup,
             "emb": keys.embedding}


# -- 1. Redis memory -------------------------------------------------------------------------


def _used(client: redis_sync.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _redis_cpu_s(client: redis_sync.Redis) -> float:
    """CPU seconds the Redis server has used (user + system): per-unit costs that hold on a
    loaded machine, where wall-clock rates measure the neighbours too."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid``, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _write_users(url: str, bundle, histories: dict[str, list[str]]) -> None:
    """As the features worker writes them: the apply script (32-hex event ids, a purchase in
    five), then one embedding per user at its hist_version."""
    client = connect_redis(url)
    store = RedisUserStateStore(client)
    try:
        names = list(histories)
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            writes = [EventWrite(uuid.uuid4().hex, u, item, 4 if n % 5 == 4 else 1, 1_700_000_000_000 + n)
                      for u in chunk for n, item in enumerate(histories[u])]
            applied = await store.apply_events_with_states(writes, bundle.max_len)
            states = list(applied.states.values())
            vectors = bundle.encode([s.history for s in states])
            await store.put_embeddings([EmbeddingWrite(s.user_id, bundle.version, s.hist_version, vectors[i])
                                        for i, s in enumerate(states)])
    finally:
        await client.aclose()


def _per_key_sample(client: redis_sync.Redis, users: list[str]) -> dict[str, float]:
    pipe = client.pipeline(transaction=False)
    for u in users:
        for key in USER_KEYS.values():
            pipe.memory_usage(key(u), samples=0)
    raw = pipe.execute()
    out = {}
    for i, name in enumerate(USER_KEYS):
        out[name] = float(np.mean([v or 0 for v in raw[i::len(USER_KEYS)]]))
    return out


async def _write_items(url: str, n: int, rng) -> tuple[int, int]:
    from shopstream.catalog.v1 import catalog_pb2

    client = connect_redis(url)
    plain = redis_sync.Redis.from_url(url)
    try:
        catalog, trending = RedisCatalogStore(client), RedisTrendingStore(client)
        before = _used(plain)
        for start in range(0, n, 2000):
            await catalog.upsert([catalog_pb2.CatalogItem(
                item_id=f"item-{i:08d}", title=f"Product {i} of the storefront, with a title", category=f"cat-{i % 200}",
                brand=f"brand-{i % 3000}", price=float(rng.uniform(1, 500)), in_stock=True,
                attributes=[f"a{int(a)}" for a in rng.integers(0, 5000, 6)]) for i in range(start, min(n, start + 2000))])
        after_catalog = _used(plain)
        for start in range(0, n, 2000):
            await trending.record([(f"item-{i:08d}", 1) for i in range(start, min(n, start + 2000))])
        after_trending = _used(plain)
        return after_catalog - before, after_trending - after_catalog
    finally:
        await client.aclose()
        plain.close()


def memory(models: Path, sequences: dict[str, list[str]], quick: bool) -> dict:
    bundle = load_bundle(models, latest_version(models), prefer_gpu=False, intra_op_threads=1)
    rng = np.random.default_rng(7)
    vocab = list({item for seq in sequences.values() for item in seq})
    users = list(sequences)[: (1000 if quick else 2000)]
    heavy_n = 200 if quick else 500
    profiles = {
        "typical": {f"u-{uuid.uuid4().hex[:12]}": sequences[u] for u in users},
        "heavy": {f"u-{uuid.uuid4().hex[:12]}": [vocab[i] for i in rng.integers(0, len(vocab), 200)]
                  for _ in range(heavy_n)},
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-redis-") as tmp, EmbeddedRedis(data_dir=tmp) as server:
        client = redis_sync.Redis.from_url(server.url)
        for name, histories in profiles.items():
            before, cpu_before = _used(client), _redis_cpu_s(client)
            asyncio.run(_write_users(server.url, bundle, histories))
            delta, cpu = _used(client) - before, _redis_cpu_s(client) - cpu_before
            per_key = _per_key_sample(client, list(histories)[:200])
            events = sum(len(h) for h in histories.values())
            rows.append({"what": f"user ({name})", "n": len(histories), "events_per_user": events / len(histories),
                         "bytes_each": delta / len(histories), **{f"{k}_bytes": v for k, v in per_key.items()},
                         # the apply script and the embedding write, server side
                         "redis_cpu_us_per_event": 1e6 * cpu / events})
        items_n = 20_000 if quick else 50_000
        catalog_bytes, trending_bytes = asyncio.run(_write_items(server.url, items_n, rng))
        rows.append({"what": "item (catalog)", "n": items_n, "bytes_each": catalog_bytes / items_n})
        rows.append({"what": "item (trending)", "n": items_n, "bytes_each": trending_bytes / items_n})
        client.close()
    per_user = {r["what"]: r["bytes_each"] for r in rows if r["what"].startswith("user")}
    per_item = sum(r["bytes_each"] for r in rows if r["what"].startswith("item"))
    projection = []
    for profile in ("user (typical)", "user (heavy)"):
        total = USERS_10M * per_user[profile] + ITEMS_1M * per_item
        projection.append({"profile": profile, "users": USERS_10M, "items": ITEMS_1M,
                           "redis_GiB": total / 2**30, "masters_at_24GiB": int(np.ceil(total / MASTER_USABLE_BYTES)),
                           "with_replica_each": 2 * int(np.ceil(total / MASTER_USABLE_BYTES))})
    # The ranker holds the item vectors in its own memory (one float32 row per item) and,
    # above the ANN threshold, an IVF-Flat copy (the row and an int64 id per item).
    dim = bundle.dim
    ranker = {"dim": dim, "exact_bytes_per_item": 4 * dim, "ivf_bytes_per_item": 4 * dim + 8,
              "ranker_GiB_at_1M_items_exact_plus_ivf": ITEMS_1M * (8 * dim + 8) / 2**30}
    return {"rows": rows, "projection": projection, "ranker_item_memory": ranker}


MEMORY_COLUMNS = ["what", "n", "events_per_user", "bytes_each", "hist_bytes", "purchased_bytes", "counts_bytes",
                  "dedup_bytes", "emb_bytes", "redis_cpu_us_per_event"]
PROJECTION_COLUMNS = ["profile", "users", "items", "redis_GiB", "masters_at_24GiB", "with_replica_each"]


# -- 2. features throughput, 1 vs 2 workers --------------------------------------------------


def _metric(stack, name: str) -> float:
    from services.stack.processes import metric_value, metrics_text

    text = metrics_text(stack.ports["features_metrics"], names=[name])
    return (metric_value(text, name) or 0.0) if text else 0.0


def features_phase(kafka: str, redis_url: str, models: Path, sequences: dict, workers: int, events_n: int,
                   log_dir: Path) -> dict:
    from bench.ingest import PARTITIONS, start_at_end
    from services.stack.local import ServiceStack

    ns = uuid.uuid4().hex[:8]
    chosen, total = {}, 0
    for u, seq in sequences.items():
        if total >= events_n:
            break
        chosen[f"{ns}-{u}"] = seq
        total += len(seq)
    app_id = f"bench-scale-{ns}"
    start_at_end(kafka, redis_url, app_id)
    env = {"SHOPSTREAM_FEATURES_APP_ID": app_id, "SHOPSTREAM_FEATURES_LOG_LEVEL": "WARNING"}
    stacks = [ServiceStack(kafka, redis_url, models, log_dir / f"{workers}w-{n}", partitions=PARTITIONS,
                           extra_env=env) for n in range(workers)]
    applied = "shopstream_features_events_applied_total"
    assigned = "shopstream_features_assigned_partitions"
    try:
        for stack in stacks:
            stack.start_service("features", timeout=120)
        # Every worker holds partitions before the first event: the split is the group's, not a race.
        deadline = time.monotonic() + 180  # a rebalance takes long on a loaded machine
        while not all(_metric(s, assigned) > 0 for s in stacks) and time.monotonic() < deadline:
            time.sleep(0.2)
        shares = [_metric(s, assigned) for s in stacks]
        pids = [s.processes["features"].proc.pid for s in stacks]
        redis_client = redis_sync.Redis.from_url(redis_url)
        producing = threading.Thread(target=lambda: _produce(kafka, chosen), daemon=True)
        producing.start()
        first = done = None
        first_count, per_worker = 0.0, [0.0] * workers
        cpu0 = redis_cpu0 = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            per_worker = [_metric(s, applied) for s in stacks]
            now = time.perf_counter()
            if first is None and sum(per_worker) > 0:
                first, first_count = now, sum(per_worker)
                cpu0, redis_cpu0 = [_process_cpu_s(p) for p in pids], _redis_cpu_s(redis_client)
            if sum(per_worker) >= total:
                done = now
                break
            time.sleep(0.05)
        worker_cpu = sum(_process_cpu_s(p) - c for p, c in zip(pids, cpu0 or [0.0] * workers))
        redis_cpu = _redis_cpu_s(redis_client) - (redis_cpu0 or 0.0)
        redis_client.close()
        producing.join()
    finally:
        for stack in stacks:
            stack.stop()
    seconds = (done - first) if done and first else float("nan")
    timed = total - first_count
    return {"workers": workers, "events": total, "partitions_held": "/".join(f"{s:.0f}" for s in shares),
            "applied_per_worker": "/".join(f"{a:.0f}" for a in per_worker), "seconds": seconds,
            "events_per_s": timed / seconds if seconds > 0 else float("nan"),
            # What a core of worker buys, whatever else runs on the machine.
            "events_per_worker_cpu_s": timed / worker_cpu if worker_cpu > 0 else float("nan"),
            "redis_cpu_us_per_event": 1e6 * redis_cpu / timed if timed > 0 else float("nan"),
            "load_avg_1m": os.getloadavg()[0]}


def _produce(kafka: str, chosen: dict) -> None:
    from services.contract.producer import EventProducer
    from services.ingest.replay import replay

    with EventProducer(kafka) as producer:
        replay(producer, chosen, rate=None, batch_size=1000)


def features_throughput(models: Path, sequences: dict, quick: bool) -> list[dict]:
    from services.contract.producer import ensure_topics
    from services.stack.local import infrastructure
    from bench.ingest import PARTITIONS

    events_n = 6000 if quick else 15000
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, infrastructure() as (kafka, redis_url):
        ensure_topics(kafka, partitions=PARTITIONS)
        for workers in (1, 2):
            print(f"==> features: {workers} worker(s), {events_n} events", flush=True)
            rows.append(features_phase(kafka, redis_url, models, sequences, workers, events_n, Path(tmp)))
    base = rows[0]["events_per_s"]
    for row in rows:
        row["x_vs_1_worker"] = row["events_per_s"] / base
    return rows


FEATURES_COLUMNS = ["workers", "events", "partitions_held", "applied_per_worker", "seconds", "events_per_s",
                    "x_vs_1_worker", "events_per_worker_cpu_s", "redis_cpu_us_per_event", "load_avg_1m"]


# -- 3. ranker scoring vs catalog size -------------------------------------------------------


def _exact_top_chunked(items: np.ndarray, queries: np.ndarray, k: int, chunk: int = 500_000) -> np.ndarray:
    """Exact top-k row indices (into ``items``) without a [queries x items] matrix in memory."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(items), chunk):
        scores = queries @ items[start:start + chunk].T
        kk = min(k, scores.shape[1])
        top = np.argpartition(scores, scores.shape[1] - kk, axis=1)[:, -kk:]
        cand_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        cand_ids = np.concatenate([best_ids, top + start], axis=1)
        keep = np.argpartition(cand_scores, cand_scores.shape[1] - k, axis=1)[:, -k:]
        best_scores = np.take_along_axis(cand_scores, keep, axis=1)
        best_ids = np.take_along_axis(cand_ids, keep, axis=1)
    return best_ids


def _latency(fn, budget_s: float, min_reps: int = 5) -> list[float]:
    fn()  # warm
    out, start = [], time.perf_counter()
    while len(out) < min_reps or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def ranker_sizes(sizes: list[int], budget: float, queries_n: int, big_nlist: int, rows: list[dict],
                 on_row=lambda: None) -> list[dict]:
    """Appends one row per catalog size to ``rows`` as each finishes (a long run keeps what it measured).

    Above 1M items the IVF index gets ``big_nlist`` lists instead of the ranker's rule
    (2 * sqrt(n), at most 4096): assigning 5M vectors to 4096 centroids is minutes of both
    cores on this machine; fewer lists build faster and cost more per query (reported)."""
    from bench.ranker import synthetic_items
    from services.ranker.ann import IvfIndex, probe_queries, recall_at_k
    from services.ranker.runtime import ScoringConfig, plan_scoring
    from services.ranker.scorers import build_scorer

    config = ScoringConfig(prefer_gpu=False, intra_op_threads=THREADS)
    for n in sizes:
        print(f"==> ranker: {n:,} items", flush=True)
        t0 = time.perf_counter()
        items = synthetic_items(n, seed=3)
        gen_s = time.perf_counter() - t0
        served = plan_scoring(n, prefer_gpu=False).kind  # what the ranker would use at this size
        held_out = probe_queries(items[1:], queries_n, seed=123)
        row = {"items": n, "served_scorer": served, "generate_s": gen_s}
        exact = build_scorer(plan_scoring(n, prefer_gpu=False, scorer="exact"), items, config)
        for batch in (1, 64):
            q = held_out[:batch]
            lat = _latency(lambda: exact.candidates(q, K), budget)
            row[f"exact_b{batch}_p50_ms"] = percentiles_ms(lat)["p50_ms"]
            if batch == 1:
                row["exact_b1_p99_ms"] = percentiles_ms(lat)["p99_ms"]
            else:
                row["exact_b64_qps"] = batch / float(np.median(lat))
        del exact
        gc.collect()
        if served == "ann":
            truth = _exact_top_chunked(items[1:], held_out, K) + 1
            t0 = time.perf_counter()
            # nprobe given: calibrated below against a chunked exact search (the index's own
            # calibration holds a [queries x items] score matrix: 4 GB at 5M items).
            index = IvfIndex(items, nprobe=1, threads=THREADS, nlist=big_nlist if n > 1_000_000 else 0)
            build_s = time.perf_counter() - t0
            calib = probe_queries(items[1:], queries_n, seed=0)
            calib_truth = _exact_top_chunked(items[1:], calib, K) + 1
            nprobe = 1
            while True:
                index.index.nprobe = nprobe
                got, _ = index.candidates(calib, K)
                if recall_at_k(got, calib_truth) >= 0.95 or nprobe >= index.nlist:
                    break
                nprobe *= 2
            index.nprobe = nprobe
            got, _ = index.candidates(held_out, K)
            row.update({"ann_nlist": index.nlist, "ann_nprobe": nprobe, "ann_build_s": build_s,
                        "ann_heldout_recall@10": recall_at_k(got, truth)})
            for batch in (1, 64):
                q = held_out[:batch]
                lat = _latency(lambda: index.candidates(q, K), budget)
                row[f"ann_b{batch}_p50_ms"] = percentiles_ms(lat)["p50_ms"]
                if batch == 1:
                    row["ann_b1_p99_ms"] = percentiles_ms(lat)["p99_ms"]
                else:
                    row["ann_b64_qps"] = batch / float(np.median(lat))
            del index
        row["served_b1_p50_ms"] = row["ann_b1_p50_ms"] if served == "ann" else row["exact_b1_p50_ms"]
        row["served_b64_qps"] = row["ann_b64_qps"] if served == "ann" else row["exact_b64_qps"]
        rows.append(row)
        print(table([row], RANKER_COLUMNS), flush=True)
        on_row()
        del items
        gc.collect()
    return rows


RANKER_COLUMNS = ["items", "served_scorer", "exact_b1_p50_ms", "exact_b1_p99_ms", "exact_b64_qps", "ann_nlist",
                  "ann_nprobe",
                  "ann_build_s", "ann_heldout_recall@10", "ann_b1_p50_ms", "ann_b1_p99_ms", "ann_b64_qps"]


# -- 4. embedding refresh vs users -----------------------------------------------------------


def refresh(models: Path, sequences: dict, counts: list[int]) -> list[dict]:
    bundle = load_bundle(models, latest_version(models), prefer_gpu=False, intra_op_threads=1)
    histories = [s[-bundle.max_len:] for s in sequences.values()]
    rng = np.random.default_rng(5)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-refresh-") as tmp, EmbeddedRedis(data_dir=tmp) as server:
        for n in counts:
            batch = [histories[i] for i in rng.integers(0, len(histories), n)]
            t0, c0 = time.perf_counter(), time.process_time()
            vectors = bundle.encode(batch)
            encode_s, encode_cpu = time.perf_counter() - t0, time.process_time() - c0
            writes = [EmbeddingWrite(f"r-{n}-{i}", bundle.version, 1, vectors[i]) for i in range(n)]

            async def put():
                client = connect_redis(server.url)
                try:
                    store = RedisUserStateStore(client)
                    start = time.perf_counter()
                    for s in range(0, n, 1000):  # the worker's refresh batches are hundreds to thousands
                        await store.put_embeddings(writes[s:s + 1000])
                    return time.perf_counter() - start
                finally:
                    await client.aclose()

            plain = redis_sync.Redis.from_url(server.url)
            redis_cpu0 = _redis_cpu_s(plain)
            write_s = asyncio.run(put())
            redis_cpu = _redis_cpu_s(plain) - redis_cpu0
            plain.close()
            rows.append({"users": n, "encode_s": encode_s, "write_s": write_s,
                         "encode_us_per_user": 1e6 * encode_s / n, "write_us_per_user": 1e6 * write_s / n,
                         "encode_cpu_us_per_user": 1e6 * encode_cpu / n, "redis_cpu_us_per_user": 1e6 * redis_cpu / n,
                         "users_per_s_one_core": n / (encode_s + write_s)})
    # CPU, not wall time: what a refresh of every user costs in encoder cores (a loaded machine
    # stretches the wall clock, not the work).
    last = rows[-1]
    for row in rows:
        row["full_refresh_10M_users_encoder_core_hours"] = USERS_10M * last["encode_cpu_us_per_user"] / 1e6 / 3600
    return rows


REFRESH_COLUMNS = ["users", "encode_s", "write_s", "encode_us_per_user", "encode_cpu_us_per_user", "write_us_per_user",
                   "redis_cpu_us_per_user", "users_per_s_one_core", "full_refresh_10M_users_encoder_core_hours"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer users, events and timing reps (a few minutes)")
    parser.add_argument("--max-items", type=int, default=5_000_000, help="largest catalog of the ranker section")
    parser.add_argument("--big-nlist", type=int, default=1024, help="IVF lists above 1M items")
    parser.add_argument("--sizes", type=int, nargs="*", help="catalog sizes of the ranker section (default: "
                        "12,101, 100K, 1M, 5M up to --max-items)")
    parser.add_argument("--out", default="scale", help="results name: bench/results/<out>.json")
    parser.add_argument("--skip", nargs="*", default=[], choices=["memory", "features", "ranker", "refresh"])
    args = parser.parse_args(argv)
    started = time.perf_counter()
    models = world.models_dir()
    sequences = world.sequences_for(models)
    out: dict = {"quick": args.quick, "threads": THREADS, "k": K, "complete": False}

    def save() -> Path:  # after every section: a run cut short keeps what it measured
        out["total_seconds"] = time.perf_counter() - started
        out["load_avg_1m_at_save"] = os.getloadavg()[0]
        return write(args.out, out)

    if "memory" not in args.skip:
        print("== Redis memory per user and per item (INFO used_memory deltas; MEMORY USAGE per key, sample)")
        mem = memory(models, sequences, args.quick)
        print(table(mem["rows"], MEMORY_COLUMNS))
        print(table(mem["projection"], PROJECTION_COLUMNS))
        print("ranker item memory:", mem["ranker_item_memory"])
        out["memory"] = mem
        save()
    if "features" not in args.skip:
        print("\n== features throughput: 1 vs 2 workers in one group, 4 partitions")
        rows = features_throughput(models, sequences, args.quick)
        print(table(rows, FEATURES_COLUMNS))
        out["features"] = rows
        save()
    if "ranker" not in args.skip:
        print(f"\n== ranker scoring (top-{K}) vs catalog size, {THREADS} threads")
        sizes = args.sizes or [s for s in (12_101, 100_000, 1_000_000, 5_000_000) if s <= args.max_items]
        out["ranker"] = rows = []
        ranker_sizes(sizes, 0.5 if args.quick else 1.5, 200 if args.quick else 400, args.big_nlist, rows, save)
        print(table(rows, RANKER_COLUMNS))
        save()
    if "refresh" not in args.skip:
        print("\n== embedding refresh: encode + write N users' embeddings (one core for the encoder)")
        rows = refresh(models, sequences, [1000, 10_000] if args.quick else [1000, 10_000, 50_000])
        print(table(rows, REFRESH_COLUMNS))
        out["refresh"] = rows
        save()
    out["complete"] = True
    path = save()
    print(f"\nwrote {path} ({out['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
