"""``shopstream ingest ...`` / ``python -m services.ingest``: publish, replay, generate, topics."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import uuid
from collections.abc import Sequence

from google.protobuf import json_format

from kafka.errors import KafkaError

from services.contract.producer import DEFAULT_TIMEOUT_S
from services.contract.validation import InvalidEvent, decode_event
from services.ingest.replay import DEFAULT_MAX_OUTAGE_S

logger = logging.getLogger(__name__)


def _bootstrap(args) -> str:
    """--bootstrap, else $KAFKA_BOOTSTRAP_SERVERS, else the broker of the stack `shopstream up` runs here."""
    servers = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not servers:
        from services.stack.state import NO_STACK, find_state

        state = find_state()
        if state is None:
            raise SystemExit("shopstream ingest: KAFKA_BOOTSTRAP_SERVERS is not set and "
                             + NO_STACK.format(flag="--bootstrap HOST:PORT"))
        servers = state.kafka
    return servers


def _producer(args):
    from services.contract.producer import EventProducer

    return EventProducer(_bootstrap(args), timeout_s=args.timeout)


def _synthetic_config(args):
    from services.ingest.synthetic import SyntheticConfig

    return SyntheticConfig(users=args.synthetic_users, items=args.items, categories=args.categories, seed=args.seed)


def cmd_publish(args) -> int:
    if args.json:
        raw = args.json.encode()
    else:
        doc = {"event_id": args.event_id or uuid.uuid4().hex, "user_id": args.user, "item_id": args.item,
               "type": args.type, "occurred_at": args.occurred_at or _now_rfc3339()}
        if args.session:
            doc["session_id"] = args.session
        raw = json.dumps(doc).encode()
    ev = decode_event(raw)  # the same rules as the worker's
    with _producer(args) as producer:
        producer.send_events([ev])
    print(json_format.MessageToJson(ev, preserving_proto_field_name=True, indent=None))
    return 0


def _now_rfc3339() -> str:
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.GetCurrentTime()
    return ts.ToJsonString()


def cmd_catalog(args) -> int:
    from services.ingest.catalog import catalog_from_attributes, catalog_from_docs, catalog_from_jsonl

    if args.file:
        items = catalog_from_jsonl(args.file)
    elif args.attributes:
        items = catalog_from_attributes(args.attributes)
    else:
        from services.ingest.synthetic import generate

        items = catalog_from_docs(generate(_synthetic_config(args)).catalog)
    with _producer(args) as producer:
        sent = producer.send_catalog(items)
    print(f"published {sent} catalog items")
    return 0


def cmd_replay(args) -> int:
    from services.ingest.replay import replay

    if args.synthetic:
        from services.ingest.synthetic import generate

        sequences = generate(_synthetic_config(args)).sequences
    elif args.dataset:
        from services.ingest.datasets import read_sequences

        sequences = read_sequences(args.dataset)
    else:
        raise SystemExit("replay needs a dataset path or --synthetic")
    from services.common.progress import Progress
    from services.ingest.replay import select

    total = sum(len(seq) for seq in select(sequences, users=args.users, holdout=args.holdout).values())
    with _producer(args) as producer, Progress(total, "replay", "event") as bar:
        sent = replay(producer, sequences, rate=args.rate, users=args.users, holdout=args.holdout,
                      type_mix=args.types, batch_size=args.batch_size, max_outage_s=args.max_outage,
                      on_sent=bar.update)
    print(f"replayed {sent} events")
    return 0


def cmd_generate(args) -> int:
    from services.ingest.synthetic import generate, write_dataset

    paths = write_dataset(generate(_synthetic_config(args)), args.out)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_export(args) -> int:
    from services.ingest.export import export_events_sync, forgotten_users

    forgotten = {}
    if args.redis:
        forgotten = asyncio.run(forgotten_users(args.redis))
    else:
        print("no --redis / $REDIS_URL: users forgotten with ForgetUser are NOT left out of this export")
    result = export_events_sync(_bootstrap(args), args.out, forgotten=forgotten)
    print(f"exported {result.written} events to {args.out} ({result.skipped} invalid records skipped, "
          f"{result.forgotten} of forgotten users left out)")
    return 0


def cmd_topics(args) -> int:
    from services.contract.producer import ensure_topics

    created = ensure_topics(_bootstrap(args), args.partitions)
    print("created: " + (", ".join(created) if created else "nothing (all exist)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shopstream ingest", description=__doc__)
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS, else the "
                        "stack `shopstream up` runs here, from var/stack.json)")
    parser.add_argument("--timeout", type=_positive, default=DEFAULT_TIMEOUT_S,
                        help="seconds each send may take before it fails (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)

    def synthetic_opts(p):
        p.add_argument("--synthetic-users", type=int, default=2000)
        p.add_argument("--items", type=int, default=1000)
        p.add_argument("--categories", type=int, default=20)
        p.add_argument("--seed", type=int, default=7)

    p = sub.add_parser("publish", help="publish one event from flags or JSON")
    p.add_argument("--json", help="the event as proto3 JSON (short type names allowed)")
    p.add_argument("--user")
    p.add_argument("--item")
    p.add_argument("--type", default="view")
    p.add_argument("--event-id")
    p.add_argument("--session")
    p.add_argument("--occurred-at", help="RFC3339; default now")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("catalog", help="publish catalog items (JSONL file, attributes file, or synthetic)")
    p.add_argument("--file", help="JSONL, one CatalogItem (proto3 JSON) per line")
    p.add_argument("--attributes", help="item attributes JSON ({item_id: [attr, ...]})")
    synthetic_opts(p)
    p.set_defaults(func=cmd_catalog)

    p = sub.add_parser("replay", help="replay a dataset as live traffic")
    p.add_argument("dataset", nargs="?", help="sequence file (user item item ...)")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--rate", type=float, default=None, help="events/s (default: as fast as possible)")
    p.add_argument("--users", type=int, default=None, help="only the first N users")
    p.add_argument("--holdout", type=int, default=0, help="keep back the last N items per user")
    p.add_argument("--types", default="view", help='event type mix, e.g. "view=0.8,click=0.15,purchase=0.05"')
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--max-outage", type=float, default=DEFAULT_MAX_OUTAGE_S,
                   help="seconds of broker failures to ride out (a restart) before giving up (default: %(default)s)")
    synthetic_opts(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("generate", help="write a synthetic dataset + catalog to a directory")
    p.add_argument("out")
    synthetic_opts(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", help="export the event log (events topic) to JSONL for training")
    p.add_argument("out", help="JSONL file to write")
    p.add_argument("--redis", default=os.environ.get("REDIS_URL"),
                   help="Redis of the stack: users forgotten there are left out (default: $REDIS_URL)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("topics", help="create the topics if missing")
    p.add_argument("--partitions", type=int, default=8)
    p.set_defaults(func=cmd_topics)
    return parser


def _positive(value: str) -> float:
    seconds = float(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        return args.func(args)
    except InvalidEvent as exc:
        print(f"invalid event ({exc.reason}): {exc.message}", file=sys.stderr)
        return 2
    except (KafkaError, ConnectionError) as exc:
        print(f"Kafka unavailable: {exc}", file=sys.stderr)
        return 1
