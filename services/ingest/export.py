"""Export the event log (the events topic) to JSONL, the input the trainer reads with ``--events-jsonl``.

Reads every partition from the beginning up to the end offsets seen at start
(no consumer group: nothing is committed, the live consumers are unaffected).
Records that fail validation are skipped and counted: they are in the dead-letter topic.
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from shopstream.events.v1 import events_pb2

from services.contract import topics
from services.contract.validation import InvalidEvent, decode_event


@dataclass
class ExportResult:
    written: int = 0
    skipped: int = 0


def event_to_json(ev: events_pb2.Event) -> dict:
    return {
        "event_id": ev.event_id,
        "user_id": ev.user_id,
        "item_id": ev.item_id,
        "type": events_pb2.EventType.Name(ev.type).removeprefix("EVENT_TYPE_").lower(),
        "occurred_at": ev.occurred_at.ToJsonString(),
        "session_id": ev.session_id,
    }


async def export_events(bootstrap_servers: str, path: str | os.PathLike[str], topic: str = topics.EVENTS,
                        poll_timeout_ms: int = 500) -> ExportResult:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    result = ExportResult()
    try:
        await consumer._client.force_metadata_update()
        parts = [TopicPartition(topic, p) for p in sorted(consumer._client.cluster.partitions_for_topic(topic) or ())]
        if not parts:
            raise SystemExit(f"topic {topic} does not exist")
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        with open(path, "w", encoding="utf-8") as out:
            while any([await consumer.position(tp) < end[tp] for tp in parts]):
                for tp, records in (await consumer.getmany(timeout_ms=poll_timeout_ms)).items():
                    for record in records:
                        if record.offset >= end[tp]:
                            continue
                        try:
                            ev = decode_event(record.value)
                        except InvalidEvent:
                            result.skipped += 1
                            continue
                        out.write(json.dumps(event_to_json(ev)) + "\n")
                        result.written += 1
    finally:
        await consumer.stop()
    return result


def export_events_sync(bootstrap_servers: str, path: str | os.PathLike[str], topic: str = topics.EVENTS) -> ExportResult:
    return asyncio.run(export_events(bootstrap_servers, path, topic))
