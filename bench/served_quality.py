"""Served = measured: the quality of what the running system serves vs the offline number.

Every user's history except the test item is replayed through Kafka → features →
Redis; then the gateway is asked for each user's top-20 (history excluded, as the
offline protocol does) and HR/NDCG are computed from what was served. The same
bundle is evaluated offline (ONNX encoder, full ranking, history excluded) in the
same run. The two must agree within ±0.002.

    python -m bench.served_quality [--data ../shared/data/beauty/Beauty.txt] [--models-dir DIR] [--users N]
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import torch

from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from bench import report
from services.ingest.datasets import read_sequences
from services.common.bundle.model import load_bundle
from services.contract.producer import EventProducer, ensure_topics
from services.ingest.replay import replay
from services.stack.local import ServiceStack, infrastructure
from services.stack.processes import metric_value, metrics_text
from services.training.evaluate import metrics_from_ranks, target_ranks

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "beauty" / "Beauty.txt"
TOLERANCE = 0.002
K = 20
HISTORY_CAP = 1024  # keep every replayed item, so "exclude seen" means the whole history, as offline


def offline_ranks(bundle, histories: list[list[str]], targets: list[str], batch: int = 1024) -> np.ndarray:
    """0-based full-ranking ranks of each target with the bundle's ONNX encoder, history excluded."""
    table = torch.from_numpy(bundle.item_embeddings)
    out = []
    for start in range(0, len(histories), batch):
        hist = histories[start:start + batch]
        emb = torch.from_numpy(bundle.encode(hist))
        scores = emb @ table.T
        idx = [[bundle.index_of[i] for i in h] for h in hist]
        width = max(len(h) for h in idx)
        padded = torch.tensor([h + [0] * (width - len(h)) for h in idx], dtype=torch.int64)
        tgt = torch.tensor([bundle.index_of[t] for t in targets[start:start + batch]], dtype=torch.int64)
        out.append(target_ranks(scores, tgt, padded).numpy())
    return np.concatenate(out)


async def served_ranks(addr: str, users: list[str], targets: list[str], concurrency: int = 16) -> tuple[np.ndarray, int]:
    """Ranks of each target in the gateway's top-K (K when absent), and how many answers were not personalized."""
    ranks = np.full(len(users), K, dtype=np.int64)
    not_personalized = 0
    queue = asyncio.Queue()
    for i in range(len(users)):
        queue.put_nowait(i)
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        filters = gateway_pb2.RecommendFilters(exclude_seen=True, in_stock_only=False)

        async def worker():
            nonlocal not_personalized
            while not queue.empty():
                i = queue.get_nowait()
                resp = await stub.Recommend(gateway_pb2.RecommendRequest(user_id=users[i], k=K, filters=filters),
                                            timeout=10.0)
                if resp.strategy != gateway_pb2.STRATEGY_PERSONALIZED or resp.degraded:
                    not_personalized += 1
                served = [it.item_id for it in resp.items]
                if targets[i] in served:
                    ranks[i] = served.index(targets[i])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ranks, not_personalized


def _wait_applied(stack: ServiceStack, expected: int, timeout: float) -> float:
    port = stack.ports["features_metrics"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = metrics_text(port) or ""
        done = sum(metric_value(text, m) or 0 for m in ("shopstream_features_events_applied_total",
                                                        "shopstream_features_events_duplicate_total"))
        if done >= expected:
            return done
        time.sleep(0.5)
    raise TimeoutError(f"features applied fewer than {expected} events in {timeout}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.served_quality", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--models-dir", type=Path, required=True, help="a bundle trained on --data")
    p.add_argument("--users", type=int, default=0, help="evaluate only the first N users (0 = all)")
    args = p.parse_args(argv)

    bundle = load_bundle(args.models_dir)
    sequences = {u: s for u, s in read_sequences(args.data).items() if len(s) >= 3}
    users = list(sequences)[: args.users or None]
    histories = [sequences[u][:-1] for u in users]
    targets = [sequences[u][-1] for u in users]

    started = time.monotonic()
    offline = metrics_from_ranks(offline_ranks(bundle, histories, targets))
    offline_s = time.monotonic() - started

    with infrastructure() as (kafka, redis), tempfile.TemporaryDirectory() as tmp:
        ensure_topics(kafka, partitions=4)
        env = {"SHOPSTREAM_FEATURES_HISTORY_CAP": str(HISTORY_CAP), "SHOPSTREAM_RANKER_HISTORY_LEN": str(HISTORY_CAP),
               "SHOPSTREAM_GATEWAY_HISTORY_LEN": str(HISTORY_CAP), "SHOPSTREAM_RANKER_MAX_K": str(K)}
        with ServiceStack(kafka, redis, args.models_dir, Path(tmp), partitions=4, extra_env=env) as stack:
            started = time.monotonic()
            with EventProducer(kafka) as producer:
                sent = replay(producer, dict(zip(users, histories)), rate=None)
            _wait_applied(stack, sent, timeout=1800)
            replay_s = time.monotonic() - started
            started = time.monotonic()
            ranks, not_personalized = asyncio.run(served_ranks(stack.gateway_addr, users, targets))
            serve_s = time.monotonic() - started
    served = metrics_from_ranks(ranks)

    rows = [{"source": "offline (bundle, ONNX)", **offline, "seconds": offline_s},
            {"source": "served (Kafka→features→Redis→gateway)", **served, "seconds": serve_s}]
    columns = ["source", "users", "hr@10", "ndcg@10", "hr@20", "ndcg@20", "seconds"]
    diffs = {m: served[m] - offline[m] for m in ("hr@10", "ndcg@10", "hr@20", "ndcg@20")}
    ok = all(abs(d) <= TOLERANCE for d in diffs.values())
    print(report.table(rows, columns))
    print(f"replayed {sent} events in {replay_s:.1f}s ({sent / replay_s:.0f}/s); "
          f"{not_personalized} answers not personalized")
    print("served - offline: " + ", ".join(f"{m} {d:+.4f}" for m, d in diffs.items())
          + f" -> {'OK' if ok else 'MISMATCH'} (tolerance ±{TOLERANCE})")
    path = report.write("served_quality", {"model_version": bundle.version, "data": str(args.data), "offline": offline,
                                           "served": served, "diff": diffs, "within_tolerance": ok,
                                           "events_replayed": sent, "replay_seconds": replay_s,
                                           "not_personalized": not_personalized})
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
