"""Export the event log (the events topic) to JSONL, the input the trainer reads with ``--events-jsonl``.

Reads every partition from the beginning up to (at least) the end offsets seen at start
(no consumer group: nothing is committed, the live consumers are unaffected).
Records that fail validation are skipped and counted: they are in the dead-letter topic.
Events of users forgotten with ForgetUser that occurred before their forget time are left out
and counted (docs/privacy.md): pass ``forgotten`` (``read_forgotten`` of the user state store).
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from shopstream.events.v1 import events_pb2

from services.contract import topics
from services.contract.validation import InvalidEvent, decode_event


@dataclass
class ExportResult:
    written: int = 0
    skipped: int = 0
    forgotten: int = 0  # left out: their user was forgotten after they occurred


def event_to_json(ev: events_pb2.Event) -> dict:
    return {
        "event_id": ev.event_id,
        "user_id": ev.user_id,
        "item_id": ev.item_id,
        "type": events_pb2.EventType.Name(ev.type).removeprefix("EVENT_TYPE_").lower(),
        "occurred_at": ev.occurred_at.ToJsonString(),
        "session_id": ev.session_id,
    }


async def forgotten_users(redis_url: str) -> dict[str, int]:
    """Users forgotten with ForgetUser -> when (ms), read once through a client of its own
    (docs/privacy.md): what ``is_forgotten`` takes."""
    from services.common.infra import connect_redis
    from services.common.stores.user_state import read_forgotten

    client = connect_redis(redis_url)
    try:
        return await read_forgotten(client)
    finally:
        await client.aclose()


def is_forgotten(ev: events_pb2.Event, forgotten: Mapping[str, int]) -> bool:
    """Whether ``ev`` belongs to a user forgotten after it occurred (user id -> forget ms)."""
    forgot_ms = forgotten.get(ev.user_id)
    return forgot_ms is not None and ev.occurred_at.ToMilliseconds() <= forgot_ms


async def export_events(bootstrap_servers: str, path: str | os.PathLike[str], topic: str = topics.EVENTS,
                        poll_timeout_ms: int = 500, forgotten: Mapping[str, int] | None = None) -> ExportResult:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    result = ExportResult()
    forgotten = forgotten or {}
    try:
        known = await consumer.topics()  # fetches the cluster's metadata
        if topic not in known:
            raise SystemExit(f"topic {topic} does not exist")
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            raise SystemExit(f"topic {topic} does not exist")
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        with open(path, "w", encoding="utf-8") as out:
            # Reads until every position passes the end offsets seen at start, keeping whole
            # fetched batches: the embedded tansu broker reports a partition's end offset as its
            # last batch's base offset + 1, not its last record's offset + 1, so records past
            # ``end`` may belong to the log as it was at start (tests/integration/test_ingest_export.py).
            while any([await consumer.position(tp) < end[tp] for tp in parts]):
                for tp, records in (await consumer.getmany(timeout_ms=poll_timeout_ms)).items():
                    for record in records:
                        try:
                            ev = decode_event(record.value)
                        except InvalidEvent:
                            result.skipped += 1
                            continue
                        if is_forgotten(ev, forgotten):
                            result.forgotten += 1
                            continue
                        out.write(json.dumps(event_to_json(ev)) + "\n")
                        result.written += 1
    finally:
        await consumer.stop()
    return result


def export_events_sync(bootstrap_servers: str, path: str | os.PathLike[str], topic: str = topics.EVENTS,
                       forgotten: Mapping[str, int] | None = None) -> ExportResult:
    return asyncio.run(export_events(bootstrap_servers, path, topic, forgotten=forgotten))
