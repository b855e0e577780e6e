"""``shopstream up``: the whole system on one machine, for real.

Infrastructure (KAFKA_BOOTSTRAP_SERVERS / REDIS_URL, else an embedded tansu
broker and valkey server), a trained model (trained now if none exists),
features + ranker + gateway as processes, live traffic replayed through Kafka,
and sample recommendations. Ctrl-C stops everything in reverse order.

The console shows what a person follows (``==>`` lines, progress bars); each process logs
JSON to its own file under ``<workdir>/logs/``. Ports are fixed (README, ``--help``), and
``<workdir>/stack.json`` tells the other ``shopstream`` commands where the stack runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from services.common.bundle import BundleError, latest_version, load_bundle
from services.common.infra import redacted
from services.common.logs import JsonFormatter
from services.common.progress import Progress
from services.contract.producer import EventProducer, ensure_topics
from services.ingest.catalog import catalog_from_attributes, catalog_from_jsonl
from services.ingest.datasets import read_sequences
from services.ingest.replay import replay, select
from services.ingest.synthetic import SyntheticConfig, generate, write_dataset
from services.stack.client import describe, fetch
from services.stack.embedded import free_port
from services.stack.local import DEV_GATEWAY_ENV, ServiceStack, gateway_has_http, infrastructure
from services.stack.popularity import seed_trending
from services.stack.prometheus import LocalPrometheus, fetch_prometheus, find_binary
from services.stack.retrain_schedule import RetrainSchedule
from services.stack.state import DEFAULT_WORKDIR, KAFKA_PORT, PORTS, REDIS_PORT, REDIS_URL_FILE_NAME, \
    STATE_FILE_NAME, STATE_FILE_VAR, PortInUse, StackState, check_ports, port_free, remove_state, state_path, \
    write_private

logger = logging.getLogger(__name__)

SAMPLE_USERS = 3
# Set on the gateway when Prometheus runs, for the demo page's link (the gateway's setting).
PROMETHEUS_URL_VAR = "SHOPSTREAM_GATEWAY_PROMETHEUS_URL"


def _env_port(name: str) -> int:
    return int(os.environ.get(f"SHOPSTREAM_UP_{name.upper()}_PORT", PORTS[name][0]))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shopstream up", description=__doc__.splitlines()[0],
                                epilog="Every port flag also reads SHOPSTREAM_UP_<NAME>_PORT (e.g. "
                                       "SHOPSTREAM_UP_GATEWAY_PORT); a taken port stops start-up naming its flag.")
    p.add_argument("--dataset", type=Path, help="sequence file (Beauty format); default: a synthetic dataset")
    p.add_argument("--attributes", type=Path, help="item attributes JSON for the catalog (with --dataset)")
    p.add_argument("--workdir", type=Path, default=Path("var"),
                   help="models, data, logs/ and stack.json (default: var)")
    p.add_argument("--rate", type=float, default=500.0, help="replayed events per second")
    p.add_argument("--users", type=int, default=500, help="how many users to replay as live traffic")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run after start-up; 0 = until Ctrl-C")
    p.add_argument("--retrain", action="store_true", help="train a new model even if one exists")
    p.add_argument("--train-minutes", type=float, default=2.0, help="wall-time cap when training the demo model")
    p.add_argument("--train-args", default="", help="more `shopstream train` flags, e.g. '--epochs 5 --dim 32' "
                                                    "(the demo model's, and every retrain's with --retrain-every)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--retrain-every", type=float, default=0.0, metavar="SECONDS",
                   help="the closed loop on a schedule: every SECONDS retrain from the Kafka log, start an "
                        "experiment live vs candidate, let the promotion policy decide (0 = off)")
    p.add_argument("--retrain-policy-args", default="", metavar="FLAGS",
                   help="with --retrain-every: more `shopstream experiments report --auto-promote` flags for the "
                        "promotion policy, e.g. '--min-impressions 500 --alpha 0.01'")
    p.add_argument("--prometheus", action=argparse.BooleanOptionalAction, default=None,
                   help="start Prometheus on the services (default: when its binary is on PATH or under "
                        "var/promtool; --prometheus fetches Debian's package when missing)")
    for name, (default, flag) in PORTS.items():
        p.add_argument(flag, dest=f"{name}_port", type=int, default=_env_port(name), metavar="PORT",
                       help=f"{name.replace('_', ' ')} port (default {default})")
    p.add_argument("--free-ports", action="store_true",
                   help="let the OS pick every port, embedded Kafka and Redis included (stack.json says which)")
    return p


def _say(line: str = "") -> None:
    print(line, flush=True)


def _log_to_file(path: Path) -> None:
    """This process's own log (JSON, as the services'), off the console."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _usable_model(models_dir: Path) -> bool:
    """Whether ``models_dir`` has a published bundle the services will accept."""
    if latest_version(models_dir) is None:
        return False
    try:
        load_bundle(models_dir, prefer_gpu=False, intra_op_threads=1)
    except BundleError as exc:
        _say(f"==> the published model is not usable ({exc}): training a new one")
        return False
    return True


def _prepare_data(args) -> tuple[Path, Path | None, list]:
    """The dataset to train on and replay, its item attributes, and the catalog to publish."""
    if args.dataset:
        catalog = catalog_from_attributes(args.attributes) if args.attributes else []
        return args.dataset, args.attributes, catalog
    data_dir = args.workdir / "data"
    paths = write_dataset(generate(SyntheticConfig()), data_dir)
    return paths["sequences"], paths["attributes"], catalog_from_jsonl(paths["catalog"])


def _train(data: Path, attributes: Path | None, models_dir: Path, minutes: float, extra: str, log: Path) -> None:
    """Trains in a process of its own: its JSON log to ``log``, its progress (stderr) to this console."""
    cmd = [sys.executable, "-m", "services.training", "--data", str(data), "--models-dir", str(models_dir),
           "--max-minutes", str(minutes), *shlex.split(extra)]
    if attributes:
        cmd += ["--attributes", str(attributes)]
    _say(f"==> no model in {models_dir}: training one, at most {minutes:g} min (log: {log})")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        done = subprocess.run(cmd, stdout=out)
    if done.returncode != 0:
        raise SystemExit(f"shopstream up: training failed (exit {done.returncode}); see {log}")


def _model_summary(models_dir: Path) -> str:
    version = latest_version(models_dir)
    try:
        meta = json.loads((models_dir / version / "metadata.json").read_text())
        test = meta["metrics"]["sasrec"]["test"]
        pop = meta["metrics"]["poprec"]["test"]
        return (f"model {version}: test HR@10 {test['hr@10']:.4f}, NDCG@10 {test['ndcg@10']:.4f} "
                f"(PopRec {pop['hr@10']:.4f} / {pop['ndcg@10']:.4f}), {meta['epochs']} epochs")
    except (OSError, KeyError, TypeError, ValueError):
        return f"model {version}"


def _wait_for_signal(duration: float) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait(duration if duration > 0 else None)


def _show(stack: ServiceStack, users: list[str], sequences: dict, title: str) -> None:
    _say(f"\n==> {title}")
    for user in users:
        recent = " ".join(sequences[user][-5:])
        _say(f"  user {user} (recent: {recent})")
        _say(f"    {describe(fetch(stack.gateway_addr, user, k=10))}")


def _ports(args, prometheus: bool) -> dict[str, int]:
    """The ports to use: the flags' (fixed defaults), or 0 (any free one) with --free-ports."""
    ports = {name: 0 if args.free_ports else getattr(args, f"{name}_port") for name in PORTS}
    if not prometheus:
        ports.pop("prometheus")
    if not gateway_has_http():
        ports.pop("gateway_http")
    check_ports(ports)
    return ports


def _broker_port(default: int, free_ports: bool, what: str, env_var: str) -> int | None:
    if os.environ.get(env_var):
        return None  # not embedded
    if free_ports:
        return free_port()
    if port_free(default):
        return default
    port = free_port()
    _say(f"==> port {default} is in use (another {what}?): the embedded {what} takes {port}")
    return port


def _prometheus_binary(args) -> str | None:
    found = find_binary("prometheus", args.workdir)
    if found or args.prometheus is not True:
        return found
    _say("==> fetching Debian's prometheus package into var/promtool (apt-get download, dpkg -x)")
    try:
        return fetch_prometheus()
    except RuntimeError as exc:
        raise SystemExit(f"shopstream up: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    try:
        return _up(_parser().parse_args(argv))
    except KeyboardInterrupt:  # Ctrl-C before start-up finished: everything started is stopped by now
        _say("\n==> interrupted; stopped")
        return 130


def _up(args: argparse.Namespace) -> int:
    workdir = args.workdir
    models_dir, log_dir = workdir / "models", workdir / "logs"
    prometheus_bin = _prometheus_binary(args) if args.prometheus is not False else None
    try:
        ports = _ports(args, prometheus_bin is not None)
    except PortInUse as exc:
        print(f"shopstream up: {exc}", file=sys.stderr)
        return 2
    _log_to_file(log_dir / "up.log")
    _say(f"==> logs: {log_dir}/ (JSON, one file per process); this console shows progress and results")
    state_file = state_path(workdir)
    with contextlib.ExitStack() as exit_stack:
        kafka, redis = exit_stack.enter_context(infrastructure(
            redis_dir=workdir / "redis",
            kafka_port=_broker_port(KAFKA_PORT, args.free_ports, "Kafka", "KAFKA_BOOTSTRAP_SERVERS"),
            redis_port=_broker_port(REDIS_PORT, args.free_ports, "Redis", "REDIS_URL")))
        _say(f"==> Kafka at {kafka}, Redis at {redacted(redis)}")
        ensure_topics(kafka, args.partitions)
        data, attributes, catalog = _prepare_data(args)
        if args.retrain or not _usable_model(models_dir):
            _train(data, attributes, models_dir, args.train_minutes, args.train_args, log_dir / "train.log")
        _say(f"==> {_model_summary(models_dir)}")

        producer = exit_stack.enter_context(EventProducer(kafka))
        if catalog:
            producer.send_catalog(catalog)
            _say(f"==> published {len(catalog)} catalog items")
        sequences = read_sequences(data)
        seeded = seed_trending(redis, sequences)
        _say(f"==> trending seeded with the {seeded} most popular items of {data}" if seeded
             else "==> trending: kept what Redis already had")

        stack = ServiceStack(kafka, redis, models_dir, log_dir, partitions=args.partitions,
                             ports={k: v for k, v in ports.items() if k != "prometheus"})
        prometheus = None
        if prometheus_bin:
            prometheus = LocalPrometheus(
                {name: f"127.0.0.1:{stack.ports[name + '_metrics']}" for name in ("features", "ranker", "gateway")},
                workdir / "prometheus", ports.get("prometheus") or free_port(), prometheus_bin,
                log_dir / "prometheus.log")
            if _gateway_takes(PROMETHEUS_URL_VAR):
                stack.extra_env[PROMETHEUS_URL_VAR] = prometheus.url
        exit_stack.enter_context(stack)
        _say(f"==> services up: gateway {stack.gateway_addr}, ranker {stack.ranker_addr}")
        if prometheus is not None:
            try:
                exit_stack.enter_context(prometheus)
            except RuntimeError as exc:
                _say(f"==> Prometheus did not start ({exc}); carrying on without it")
                prometheus = None
        dev_env = " ".join(f"{k}={v}" for k, v in DEV_GATEWAY_ENV.items())
        _say(f"==> development mode: {dev_env} (no API tokens, plaintext, everything on 127.0.0.1); "
             "a deployment sets SHOPSTREAM_GATEWAY_TOKENS_FILE and TLS, see docs/security.md")

        state = StackState(
            pid=os.getpid(), workdir=str(workdir.resolve()), kafka=kafka, redis=redacted(redis),
            gateway=stack.gateway_addr, ranker=stack.ranker_addr,
            metrics={name: f"http://127.0.0.1:{stack.ports[name + '_metrics']}/metrics"
                     for name in ("features", "ranker", "gateway")},
            logs={**{k: str(v) for k, v in stack.log_paths().items()}, "up": str(log_dir / "up.log"),
                  **({"prometheus": str(prometheus.log_path)} if prometheus else {}),
                  **({"train": str(log_dir / "train.log")} if (log_dir / "train.log").exists() else {})},
            gateway_http=stack.gateway_http_url or "", demo=(stack.gateway_http_url or "") and
            f"{stack.gateway_http_url}/", prometheus=prometheus.url if prometheus else "",
            redis_url_file=str((workdir / REDIS_URL_FILE_NAME).resolve()), models_dir=str(models_dir.resolve()))
        # stack.json holds Redis without its password; commands that write to Redis (`shopstream
        # experiments`) read the URL from this owner-only file.
        write_private(Path(state.redis_url_file), redis)
        exit_stack.callback(lambda: Path(state.redis_url_file).unlink(missing_ok=True))
        state.write(state_file)
        exit_stack.callback(remove_state, state_file, state.pid)

        live = [u for u, seq in sequences.items() if len(seq) >= 5][: args.users]
        samples = live[:SAMPLE_USERS]
        _show(stack, samples, sequences, "before any traffic: new users get trending items")

        chosen = select({u: sequences[u] for u in live})
        total = sum(len(seq) for seq in chosen.values())
        _say(f"\n==> replaying {len(live)} users through Kafka at {args.rate:.0f} events/s")
        started = time.monotonic()
        with Progress(total, "replay", "event") as bar:
            sent = replay(producer, chosen, rate=args.rate, on_sent=bar.update)
        _say(f"    {sent} events in {time.monotonic() - started:.1f}s")
        time.sleep(1.0)  # the worker applies the last events within its freshness SLO (p99 < 1 s)
        _show(stack, samples, sequences, "after their clicks: personalized by the live model")

        _say("\n==> where things are")
        if state.demo:
            _say(f"    demo storefront     {state.demo}")
            _say(f"    HTTP/JSON API       {state.gateway_http}  (docs/api.md)")
        _say(f"    gRPC gateway        {stack.gateway_addr}")
        if prometheus is not None:
            _say(f"    Prometheus          {prometheus.url}  (alerts: {prometheus.url}/alerts, "
                 f"targets: {prometheus.url}/targets)")
        else:
            _say("    Prometheus          not started (`shopstream up --prometheus` fetches it)")
        for name in ("features", "ranker", "gateway"):
            _say(f"    {name + ' metrics':<19} {state.metrics[name]}")
        _say(f"    logs                {log_dir}/ ({', '.join(sorted(Path(p).name for p in state.logs.values()))})")
        _say(f"    stack file          {state_file}")
        # The other commands look for var/stack.json from where they run; elsewhere the variable says where.
        found_here = state_file.resolve() == (Path.cwd() / DEFAULT_WORKDIR / STATE_FILE_NAME).resolve()
        hint = "" if found_here else f"{STATE_FILE_VAR}={state_file.resolve()} "
        _say(f"\n    try, in another terminal here: source .venv/bin/activate && {hint}shopstream recommend {samples[0]}")
        _say("==> running; Ctrl-C to stop" if args.duration <= 0 else f"==> running for {args.duration:.0f}s")
        if args.retrain_every > 0:
            schedule = RetrainSchedule(args.retrain_every, kafka, redis, stack.ranker_addr, models_dir,
                                       log_dir / "retrain.log", args.train_minutes, _say,
                                       train_args=shlex.split(args.train_args),
                                       policy_args=shlex.split(args.retrain_policy_args))
            stop_schedule = threading.Event()
            thread = threading.Thread(target=schedule.run_until, args=(stop_schedule,), name="retrain-schedule",
                                      daemon=True)
            thread.start()
            exit_stack.callback(schedule.stop, stop_schedule)
            _say(f"==> retraining every {args.retrain_every:g}s from the Kafka log (log: {log_dir / 'retrain.log'})")
        _wait_for_signal(args.duration)
        _say("\n==> stopping services, then the brokers")
    _say("==> stopped")
    return 0


def _gateway_takes(var: str) -> bool:
    """Whether the gateway has a setting for ``var`` (it refuses variables that name none)."""
    from services.common.settings import env_name
    from services.gateway.settings import GatewaySettings

    return any(env_name(GatewaySettings, f) == var for f in GatewaySettings.model_fields)
