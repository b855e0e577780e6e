"""``shopstream retrain``: train a candidate from the event log in Kafka, compare it with the
live model, publish it as a candidate, and optionally start an experiment with it.

1. Reads the events topic itself (aiokafka, no consumer group: nothing is committed and
   the live consumers are unaffected): every partition from the first offset whose record
   timestamp is at or after ``--since`` (``offsets_for_times``; default: the start of what
   is retained) up to the end offsets seen at start, or the first offset at or after
   ``--until``. Records that fail validation are skipped and counted (they are in the
   dead-letter topic); an event id seen twice (a redelivery) is kept once.
2. Writes them as the trainer's JSONL input (``services/ingest/export.py``'s rows) and the
   item attributes from the catalog topic (the latest record of each item), then trains
   with the current defaults through ``shopstream train`` itself (``train_main``), into a
   staging directory.
3. Moves the bundle into ``--models-dir`` and lists it in ``CANDIDATES``
   (``services.common.bundle.registry.publish_candidate``); LATEST (the live model) stays.
4. Evaluates the candidate and the live bundle, both through onnxruntime, on the same
   hold-out: each user's most recent event (users with at least three), ranked against
   every item of each model's vocabulary, the user's earlier items excluded; a target the
   model has never seen counts as a miss.
5. Prints the comparison and writes it as JSON (``<out>/retrain.json``); with
   ``--experiment NAME`` stores an experiment control = live vs candidate
   (``services/experiments/store.py``) once the ranker reports the candidate loaded.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.common.bundle import latest_version, load_bundle, publish_candidate
from services.common.bundle.model import ModelBundle
from services.contract import topics
from services.contract.validation import InvalidEvent, decode_catalog_item, decode_event
from services.ingest.datasets import parse_rfc3339, read_events_jsonl
from services.ingest.export import event_to_json, forgotten_users, is_forgotten

logger = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"
ATTRIBUTES_FILE = "attributes.json"
RESULT_FILE = "retrain.json"


# -- reading the log --------------------------------------------------------------------


@dataclass
class PartitionRange:
    start: int
    end: int


@dataclass
class EventLog:
    """What was read: the trainer's rows plus counts of what was left out."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0
    invalid: int = 0
    duplicates: int = 0
    forgotten: int = 0  # left out: their user was forgotten (ForgetUser) after they occurred
    partitions: dict[int, PartitionRange] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"read": self.read, "kept": len(self.rows), "invalid": self.invalid, "duplicates": self.duplicates,
                "forgotten": self.forgotten,
                "partitions": {str(p): asdict(r) for p, r in sorted(self.partitions.items())}}


def _ms(ts: datetime | None) -> int | None:
    return None if ts is None else int(ts.timestamp() * 1000)


async def read_topic(bootstrap_servers: str, topic: str, since: datetime | None = None,
                     until: datetime | None = None, poll_timeout_ms: int = 300, idle_polls: int = 2,
                     ranges: dict[int, PartitionRange] | None = None) -> AsyncIterator[ConsumerRecord]:
    """Every record of ``topic`` in the window, partition by partition in offset order;
    ``ranges`` gets each partition's [start, end) as read. Nothing is committed; an absent
    topic yields nothing.

    The start is ``offsets_for_times(since)`` (default: the first retained offset), and records
    stamped before ``since`` are skipped after it too (the embedded broker answers at batch
    granularity). The end
    is the first record stamped after ``until`` (default: the moment the read began), or,
    when no such record exists yet, the point where the partition has no more records to
    give (``idle_polls`` polls in a row return nothing for it). The end is found by reading
    rather than from ``end_offsets``: the embedded broker (tansu) reports a high watermark
    short of the last batch it stored, so a read bounded by it misses the newest records.
    """
    until_ms = _ms(until) if until is not None else int(time.time() * 1000)
    since_ms = _ms(since)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # a metadata request, so partitions_for_topic knows the topic
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            return
        consumer.assign(parts)
        start = await consumer.beginning_offsets(parts)
        if since is not None:
            found = await consumer.offsets_for_times({tp: _ms(since) for tp in parts})
            for tp in parts:
                if found.get(tp) is not None:
                    start[tp] = found[tp].offset
                else:  # nothing stamped at or after ``since``: start past the last record
                    start[tp] = None
        idle = {tp: 0 for tp in parts}
        pending = set()
        for tp in parts:
            if start[tp] is None:
                await consumer.seek_to_end(tp)
                start[tp] = await consumer.position(tp)
            else:
                consumer.seek(tp, start[tp])
            pending.add(tp)
        position = dict(start)
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=poll_timeout_ms)
            for tp in list(pending):
                records = batches.get(tp, [])
                if not records:
                    idle[tp] += 1
                    if idle[tp] >= idle_polls:
                        pending.discard(tp)
                    continue
                idle[tp] = 0
                for record in records:
                    if record.timestamp > until_ms:
                        pending.discard(tp)
                        break
                    position[tp] = record.offset + 1
                    if since_ms is not None and record.timestamp < since_ms:
                        continue  # offsets_for_times may answer a batch's first offset: earlier records
                    yield record
            consumer.pause(*(tp for tp in parts if tp not in pending))
        if ranges is not None:
            for tp in parts:
                ranges[tp.partition] = PartitionRange(start[tp], position[tp])
    finally:
        await consumer.stop()


async def read_events(bootstrap_servers: str, since: datetime | None = None, until: datetime | None = None,
                      topic: str = topics.EVENTS, forgotten: Mapping[str, int] | None = None) -> EventLog:
    """The events in the window as the trainer's rows, in log order, each event id once;
    ``forgotten`` (user -> forget time in ms, ``read_forgotten``) leaves out what those users
    did before they were forgotten, as the export does (docs/privacy.md)."""
    log = EventLog()
    forgotten = forgotten or {}
    seen: set[str] = set()
    async for record in read_topic(bootstrap_servers, topic, since, until, ranges=log.partitions):
        log.read += 1
        try:
            ev = decode_event(record.value)
        except InvalidEvent:
            log.invalid += 1
            continue
        if ev.event_id in seen:
            log.duplicates += 1
            continue
        if is_forgotten(ev, forgotten):
            log.forgotten += 1
            continue
        seen.add(ev.event_id)
        log.rows.append(event_to_json(ev))
    return log


async def read_attributes(bootstrap_servers: str, topic: str = topics.CATALOG) -> dict[str, list[str]]:
    """item -> attribute ids from the catalog topic (the latest valid record of each item wins)."""
    out: dict[str, list[str]] = {}
    async for record in read_topic(bootstrap_servers, topic):
        try:
            item = decode_catalog_item(record.value)
        except InvalidEvent:
            continue
        out[item.item_id] = list(item.attributes)
    return out


def write_training_input(rows: Sequence[dict[str, Any]], path: Path) -> int:
    """The rows as the JSONL ``shopstream train --events-jsonl`` reads; returns the count."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return len(rows)


def collapse_repeats(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows in each user's time order (stable: ties keep log order), consecutive events on
    the same item (a click, its add-to-cart, its purchase) kept once: the model learns the next
    item, not the same one again."""
    out: list[dict[str, Any]] = []
    last: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: (r["user_id"], parse_rfc3339(r["occurred_at"]))):
        if last.get(row["user_id"]) != row["item_id"]:
            out.append(row)
        last[row["user_id"]] = row["item_id"]
    return out


# -- the hold-out and its evaluation ---------------------------------------------------------


@dataclass
class Holdout:
    """Each user's most recent item (users with at least three) and what came before it."""

    users: list[str]
    histories: list[list[str]]
    targets: list[str]


def holdout_of(sequences: dict[str, list[str]], last_seen: dict[str, datetime] | None = None,
               after: datetime | None = None) -> Holdout:
    """Users with at least three items (``split_leave_one_out``'s test users); with ``after``,
    only those whose most recent event (``last_seen``) occurred after it, so that a live model
    trained at ``after`` has not trained on their targets."""
    users = [u for u, seq in sequences.items() if len(seq) >= 3
             and (after is None or last_seen is None or last_seen[u] > after)]
    return Holdout(users, [sequences[u][:-1] for u in users], [sequences[u][-1] for u in users])


def evaluate_bundle(bundle: ModelBundle, holdout: Holdout, batch_size: int = 512) -> dict[str, float]:
    """HR/NDCG@10/@20 of a bundle on the hold-out (ties broken at random in expectation, as
    in ``services/training/evaluate.py``); the share of targets it knows under ``known_targets``."""
    from services.training.evaluate import metrics_from_ranks

    n_items = len(bundle.item_ids)
    items = bundle.item_embeddings[1:]  # row 0 is padding
    ranks, ties = np.zeros(len(holdout.targets), np.int64), np.zeros(len(holdout.targets), np.int64)
    known = 0
    for start in range(0, len(holdout.targets), batch_size):
        hist = holdout.histories[start:start + batch_size]
        scores = bundle.encode(hist) @ items.T  # [B, N]
        for row, (history, target) in enumerate(zip(hist, holdout.targets[start:start + batch_size])):
            t = bundle.index_of.get(target)
            if t is None:
                ranks[start + row] = n_items  # never seen by this model: outside every cut-off
                continue
            known += 1
            s = scores[row].astype(np.float64)
            target_score = s[t - 1]
            seen = [i - 1 for i in (bundle.index_of.get(h) for h in history) if i is not None and i != t]
            s[seen] = -np.inf
            s[t - 1] = -np.inf  # the target is not its own tie
            ranks[start + row] = int((s > target_score).sum())
            ties[start + row] = int((s == target_score).sum())
    metrics = metrics_from_ranks(ranks, ties)
    metrics["known_targets"] = known / len(holdout.targets) if holdout.targets else 0.0
    return metrics


# -- publishing ---------------------------------------------------------------------------------


def import_bundle(staging_models_dir: Path, version: str, models_dir: Path) -> Path:
    """Copy a bundle directory into ``models_dir`` atomically (a temp dir renamed), not live."""
    models_dir.mkdir(parents=True, exist_ok=True)
    final = models_dir / version
    if final.exists():
        raise FileExistsError(f"bundle {final} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=models_dir))
    try:
        shutil.copytree(staging_models_dir / version, tmp, dirs_exist_ok=True)
        os.chmod(tmp, 0o755)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# -- the command ------------------------------------------------------------------------------------


def parse_when(value: str) -> datetime:
    """RFC3339, or a duration before now: ``90s``, ``15m``, ``2h``, ``1d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value and value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return datetime.now(timezone.utc) - timedelta(seconds=float(value[:-1]) * units[value[-1]])
    return parse_rfc3339(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shopstream retrain", description=__doc__.splitlines()[0],
        epilog="Any other option is handed to `shopstream train` (e.g. --epochs 3 --dim 32); "
               "its defaults are the current training defaults.")
    p.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
                   help="bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS, else the running stack's)")
    p.add_argument("--models-dir", type=Path, default=os.environ.get("SHOPSTREAM_MODELS_DIR"),
                   help="default: $SHOPSTREAM_MODELS_DIR, else the running stack's, else ./var/models")
    p.add_argument("--since", type=parse_when, help="the window's start: RFC3339 or a duration ago (2h); "
                   "default: everything retained")
    p.add_argument("--until", type=parse_when, help="the window's end (default: the end of the log at start)")
    p.add_argument("--event-types", help="comma-separated event types to train on (default: all)")
    p.add_argument("--no-catalog", action="store_true", help="train without item attributes from the catalog topic")
    p.add_argument("--out", type=Path, help="where the training input and retrain.json go "
                   "(default: <models-dir>/../retrain/<UTC time>)")
    p.add_argument("--experiment", help="store an experiment NAME: control = live model, candidate = the new one")
    p.add_argument("--weights", default="50,50", help="control,candidate traffic weights (with --experiment)")
    p.add_argument("--redis", default=os.environ.get("REDIS_URL"),
                   help="leaves out forgotten users' events; needed by --experiment (default: $REDIS_URL, "
                        "else the running stack's)")
    p.add_argument("--ranker", default=os.environ.get("SHOPSTREAM_RANKER_ADDR"),
                   help="for --experiment: the ranker whose loaded models are checked "
                        "(default: $SHOPSTREAM_RANKER_ADDR, else the running stack's)")
    p.add_argument("--load-timeout", type=float, default=60.0,
                   help="seconds to wait for the ranker to load the candidate (with --experiment)")
    p.add_argument("--log-level", default="INFO")
    return p


def with_stack_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """What the command line and the environment left unset, from the stack ``shopstream up``
    runs here (var/stack.json), if any: its broker, Redis, ranker and models directory."""
    from services.stack.state import find_state, stack_redis_url

    state = find_state()
    if state is not None:
        args.kafka = args.kafka or state.kafka
        args.redis = args.redis or stack_redis_url(state)
        args.ranker = args.ranker or state.ranker
        args.models_dir = args.models_dir or (state.models_dir or None)
    args.models_dir = Path(args.models_dir or "./var/models")
    return args


@dataclass
class RetrainResult:
    candidate: str
    live: str | None
    out_dir: Path
    comparison: dict[str, Any]


def retrain(kafka: str, models_dir: Path, out_dir: Path, train_args: Sequence[str] = (),
            since: datetime | None = None, until: datetime | None = None, event_types: Sequence[str] | None = None,
            with_catalog: bool = True, redis_url: str | None = None) -> RetrainResult:
    """Steps 1-4 of the module docstring; returns the candidate version and the comparison
    (also written to ``out_dir/retrain.json``). With ``redis_url``, the users forgotten there
    are left out of the training data. Raises RuntimeError when there is nothing to
    train on or training refuses to publish."""
    from services.training.cli import train_main

    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    forgotten = asyncio.run(forgotten_users(redis_url)) if redis_url else {}
    log = asyncio.run(read_events(kafka, since, until, forgotten=forgotten))
    rows = log.rows if event_types is None else [r for r in log.rows if r["type"] in set(event_types)]
    if not rows:
        raise RuntimeError(f"no events to train on in {topics.EVENTS} (read {log.read}, window {since} .. {until})")
    events_path = out_dir / EVENTS_FILE
    trained_rows = collapse_repeats(rows)
    trained = write_training_input(trained_rows, events_path)
    sequences = read_events_jsonl(events_path)  # what the trainer reads
    args = ["--events-jsonl", str(events_path)]
    attributes = asyncio.run(read_attributes(kafka)) if with_catalog else {}
    if attributes:
        (out_dir / ATTRIBUTES_FILE).write_text(json.dumps(attributes), encoding="utf-8")
        args += ["--attributes", str(out_dir / ATTRIBUTES_FILE)]
    read_seconds = time.monotonic() - started

    with tempfile.TemporaryDirectory(prefix="retrain-", dir=out_dir) as staging:
        report_path = Path(staging) / "train.json"
        code = train_main([*args, "--models-dir", staging, "--report", str(report_path), *train_args])
        if code != 0:
            raise RuntimeError(f"training did not publish a bundle (exit {code})")
        report = json.loads(report_path.read_text(encoding="utf-8"))
        candidate = report["version"]
        import_bundle(Path(staging), candidate, models_dir)
    publish_candidate(models_dir, candidate)

    live = latest_version(models_dir)
    bundles = {"candidate": load_bundle(models_dir, candidate, prefer_gpu=False, intra_op_threads=1)}
    if live:
        bundles["live"] = load_bundle(models_dir, live, prefer_gpu=False, intra_op_threads=1)
    # The most recent hold-out: each user's latest event, for the users whose latest event came
    # after the live model was published (it cannot have trained on those); all users when no
    # model is live or none qualifies (then the live model may have seen some targets: said so).
    last_seen = {r["user_id"]: parse_rfc3339(r["occurred_at"]) for r in trained_rows}
    live_at = parse_rfc3339(bundles["live"].metadata["created_at"]) if live else None
    holdout = holdout_of(sequences, last_seen, live_at)
    rule = "each user's most recent item (users with >= 3 items)"
    if live_at is not None and holdout.users:
        rule += f" that occurred after the live model was published ({bundles['live'].metadata['created_at']})"
    elif live_at is not None:
        holdout = holdout_of(sequences)
        rule += "; no user had an event after the live model was published, so the live model may have " \
                "trained on these targets"
    rule += ", ranked among all items of each model's vocabulary, earlier items excluded"
    evaluated = {role: {"version": b.version, "holdout": evaluate_bundle(b, holdout)} for role, b in bundles.items()}
    evaluated["candidate"]["training"] = {k: report[k] for k in ("epochs", "best_epoch", "wall_seconds", "metrics")
                                         if k in report}
    better = None
    if live:
        c, lv = evaluated["candidate"]["holdout"]["ndcg@10"], evaluated["live"]["holdout"]["ndcg@10"]
        better = "candidate" if c > lv else "live"
    comparison = {
        "created_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "kafka_topic": topics.EVENTS,
        "window": {"since": since and since.isoformat(), "until": until and until.isoformat()},
        "events": log.describe() | {"selected": len(rows), "trained": trained,
                                    "event_types": list(event_types) if event_types else "all"},
        "users": len(sequences), "items": len({i for s in sequences.values() for i in s}),
        "attributes": len(attributes),
        "holdout": {"users": len(holdout.users), "rule": rule},
        "models": evaluated,
        "better_offline": better,
        "read_seconds": round(read_seconds, 3),
        "total_seconds": round(time.monotonic() - started, 3),
        "models_dir": str(models_dir),
    }
    (out_dir / RESULT_FILE).write_text(json.dumps(comparison, indent=2), encoding="utf-8")
    return RetrainResult(candidate, live, out_dir, comparison)


def format_comparison(comparison: dict[str, Any]) -> str:
    keys = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "known_targets")
    lines = [f"{'model':<10}{'version':<28}" + "".join(f"{k:>14}" for k in keys)]
    for role, entry in comparison["models"].items():
        h = entry["holdout"]
        lines.append(f"{role:<10}{entry['version']:<28}" + "".join(f"{h[k]:>14.4f}" for k in keys))
    ev = comparison["events"]
    lines.append(f"events read {ev['read']} (invalid {ev['invalid']}, duplicates {ev['duplicates']}), "
                 f"trained on {ev['trained']}; hold-out users {comparison['holdout']['users']}; "
                 f"better offline: {comparison['better_offline'] or '-'}")
    return "\n".join(lines)


def start_experiment(name: str, redis_url: str, ranker_addr: str, control: str, candidate: str,
                     weights: tuple[float, float] = (50.0, 50.0), load_timeout_s: float = 60.0):
    """Store experiment ``name``: variants ``control`` (the live version) and ``candidate``, once
    the ranker reports both loaded (it loads a new candidate on its next poll of the models
    directory); after ``load_timeout_s`` the store refuses, naming what is not loaded."""
    from services.common.infra import connect_redis
    from services.experiments.cli import loaded_model_versions
    from services.experiments.store import ExperimentStore

    deadline = time.monotonic() + load_timeout_s
    loaded = loaded_model_versions(ranker_addr)
    while not {control, candidate} <= loaded and time.monotonic() < deadline:
        time.sleep(0.5)  # polling the ranker until it has loaded the candidate
        loaded = loaded_model_versions(ranker_addr)
    definition = {"name": name, "description": f"retrain: candidate {candidate} against live {control}",
                  "variants": [{"name": "control", "kind": "model", "model_version": control, "weight": weights[0]},
                               {"name": "candidate", "kind": "model", "model_version": candidate,
                                "weight": weights[1]}]}

    async def store() -> Any:
        client = connect_redis(redis_url)
        try:
            return await ExperimentStore(client).set(definition, loaded)
        finally:
            await client.aclose()

    return asyncio.run(store())


def main(argv: list[str] | None = None) -> int:
    import sys

    from services.common.logs import configure_logging

    parser = build_parser()
    args, train_args = parser.parse_known_args(argv)
    args = with_stack_defaults(args)
    configure_logging(args.log_level, json_format=False)
    if not args.kafka:
        parser.error("--kafka or KAFKA_BOOTSTRAP_SERVERS is required (or a stack `shopstream up` runs here)")
    if args.experiment and not (args.redis and args.ranker):
        parser.error("--experiment needs --redis (or REDIS_URL) and --ranker (or SHOPSTREAM_RANKER_ADDR), "
                     "or a stack `shopstream up` runs here")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or args.models_dir.resolve().parent / "retrain" / stamp
    types = args.event_types.split(",") if args.event_types else None
    try:
        result = retrain(args.kafka, args.models_dir, out, train_args, args.since, args.until, types,
                         with_catalog=not args.no_catalog, redis_url=args.redis)
    except RuntimeError as exc:
        print(f"shopstream retrain: {exc}", file=sys.stderr)
        return 1
    print(format_comparison(result.comparison))
    print(f"candidate {result.candidate} published in {args.models_dir} (live stays {result.live or 'none'}); "
          f"comparison: {out / RESULT_FILE}")
    if args.experiment:
        if result.live is None:
            print("shopstream retrain: no live model to compare with; no experiment started", file=sys.stderr)
            return 1
        from services.experiments.definition import DefinitionError

        weights = tuple(float(w) for w in args.weights.split(","))
        try:
            experiment = start_experiment(args.experiment, args.redis, args.ranker, result.live,
                                          result.candidate, weights, args.load_timeout)
        except DefinitionError as exc:
            print(f"shopstream retrain: experiment refused: {exc}", file=sys.stderr)
            return 1
        print(f"experiment {experiment.name} running: control {result.live} vs candidate {result.candidate}")
    return 0
