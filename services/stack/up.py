"""``shopstream up``: the whole system on one machine, for real.

Infrastructure (KAFKA_BOOTSTRAP_SERVERS / REDIS_URL, else an embedded tansu
broker and valkey server), a trained model (trained now if none exists),
features + ranker + gateway as processes, live traffic replayed through Kafka,
and sample recommendations. Ctrl-C stops everything in reverse order.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from services.ingest.datasets import read_sequences
from services.common.infra import redacted
from services.common.logs import configure_logging
from services.common.bundle import BundleError, latest_version, load_bundle
from services.ingest.catalog import catalog_from_attributes, catalog_from_jsonl
from services.contract.producer import EventProducer, ensure_topics
from services.ingest.replay import replay
from services.ingest.synthetic import SyntheticConfig, generate, write_dataset
from services.stack.client import describe, fetch
from services.stack.local import DEV_GATEWAY_ENV, ServiceStack, infrastructure

logger = logging.getLogger(__name__)


def _usable_model(models_dir: Path) -> bool:
    """Whether ``models_dir`` has a published bundle the services will accept."""
    if latest_version(models_dir) is None:
        return False
    try:
        load_bundle(models_dir, prefer_gpu=False, intra_op_threads=1)
    except BundleError as exc:
        print(f"==> the published model is not usable ({exc}): training a new one", flush=True)
        return False
    return True

SAMPLE_USERS = 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shopstream up", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, help="sequence file (Beauty format); default: a synthetic dataset")
    p.add_argument("--attributes", type=Path, help="item attributes JSON for the catalog (with --dataset)")
    p.add_argument("--workdir", type=Path, default=Path("var"), help="models, data and service logs")
    p.add_argument("--rate", type=float, default=500.0, help="replayed events per second")
    p.add_argument("--users", type=int, default=500, help="how many users to replay as live traffic")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run after start-up; 0 = until Ctrl-C")
    p.add_argument("--retrain", action="store_true", help="train a new model even if one exists")
    p.add_argument("--train-minutes", type=float, default=2.0, help="wall-time cap when training the demo model")
    p.add_argument("--partitions", type=int, default=4)
    return p


def _prepare_data(args) -> tuple[Path, Path | None, list]:
    """The dataset to train on and replay, its item attributes, and the catalog to publish."""
    if args.dataset:
        catalog = catalog_from_attributes(args.attributes) if args.attributes else []
        return args.dataset, args.attributes, catalog
    data_dir = args.workdir / "data"
    paths = write_dataset(generate(SyntheticConfig()), data_dir)
    return paths["sequences"], paths["attributes"], catalog_from_jsonl(paths["catalog"])


def _train(data: Path, attributes: Path | None, models_dir: Path, minutes: float) -> None:
    cmd = [sys.executable, "-m", "services.training", "--data", str(data), "--models-dir", str(models_dir),
           "--max-minutes", str(minutes)]
    if attributes:
        cmd += ["--attributes", str(attributes)]
    print(f"==> no model in {models_dir}: training one ({' '.join(cmd[2:])})", flush=True)
    subprocess.run(cmd, check=True)


def _wait_for_signal(duration: float) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait(duration if duration > 0 else None)


def _show(stack: ServiceStack, users: list[str], sequences: dict, title: str) -> None:
    print(f"\n==> {title}")
    for user in users:
        recent = " ".join(sequences[user][-5:])
        print(f"  user {user} (recent: {recent})")
        print(f"    {describe(fetch(stack.gateway_addr, user, k=10))}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging("WARNING", json_format=False)
    models_dir, log_dir = args.workdir / "models", args.workdir / "logs"
    with contextlib.ExitStack() as exit_stack:
        kafka, redis = exit_stack.enter_context(infrastructure(redis_dir=args.workdir / "redis"))
        print(f"==> Kafka at {kafka}, Redis at {redacted(redis)}", flush=True)
        ensure_topics(kafka, args.partitions)
        data, attributes, catalog = _prepare_data(args)
        if args.retrain or not _usable_model(models_dir):
            _train(data, attributes, models_dir, args.train_minutes)
        print(f"==> model {latest_version(models_dir)}", flush=True)

        producer = exit_stack.enter_context(EventProducer(kafka))
        if catalog:
            producer.send_catalog(catalog)
            print(f"==> published {len(catalog)} catalog items", flush=True)

        stack = ServiceStack(kafka, redis, models_dir, log_dir, partitions=args.partitions)
        exit_stack.enter_context(stack)
        print(f"==> services up: gateway {stack.gateway_addr}, ranker {stack.ranker_addr}; logs in {log_dir}/",
              flush=True)
        dev_env = " ".join(f"{k}={v}" for k, v in DEV_GATEWAY_ENV.items())
        print(f"==> development mode: {dev_env} (no API tokens, plaintext, everything on 127.0.0.1); "
              "a deployment sets SHOPSTREAM_GATEWAY_TOKENS_FILE and TLS, see docs/security.md", flush=True)

        sequences = read_sequences(data)
        live = [u for u, seq in sequences.items() if len(seq) >= 5][: args.users]
        samples = live[:SAMPLE_USERS]
        _show(stack, samples, sequences, "before any traffic: new users get trending items")

        print(f"\n==> replaying {len(live)} users through Kafka at {args.rate:.0f} events/s", flush=True)
        started = time.monotonic()
        sent = replay(producer, {u: sequences[u] for u in live}, rate=args.rate)
        print(f"    {sent} events in {time.monotonic() - started:.1f}s", flush=True)
        time.sleep(1.0)
        _show(stack, samples, sequences, "after their clicks: personalized by the live model")

        print("\n==> metrics (Prometheus text format):")
        for name in ("features", "ranker", "gateway"):
            print(f"    {name:<9} http://127.0.0.1:{stack.ports[name + '_metrics']}/metrics")
        print("    scrape config and alerts: deploy/prometheus/, dashboard: deploy/grafana/shopstream.json")
        print(f"\n    try: shopstream recommend {samples[0]} --gateway {stack.gateway_addr}")
        print("==> running; Ctrl-C to stop" if args.duration <= 0 else f"==> running for {args.duration:.0f}s",
              flush=True)
        _wait_for_signal(args.duration)
        print("\n==> stopping services, then the brokers", flush=True)
    print("==> stopped", flush=True)
    return 0
