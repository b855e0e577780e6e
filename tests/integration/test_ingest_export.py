"""The event log exported from the real broker is what the trainer reads."""
from __future__ import annotations

import json
import uuid

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from shopstream.events.v1 import events_pb2

from services.contract import topics
from services.ingest.datasets import read_events_jsonl
from services.ingest.export import export_events
from services.contract.producer import EventProducer, ensure_topics

pytestmark = pytest.mark.integration


async def test_export_then_read_as_training_sequences(kafka_bootstrap, tmp_path):
    ensure_topics(kafka_bootstrap, partitions=2)
    user = f"exp-{uuid.uuid4().hex[:8]}"
    events = [events_pb2.Event(event_id=f"{user}-{n}", user_id=user, item_id=f"i{n}",
                               type=events_pb2.EVENT_TYPE_PURCHASE if n == 2 else events_pb2.EVENT_TYPE_VIEW,
                               occurred_at=Timestamp(seconds=1_700_000_000 + n)) for n in range(3)]
    with EventProducer(kafka_bootstrap) as producer:
        producer.send_events(events)
        producer.send_raw(topics.EVENTS, user.encode(), b"\x00not an event")

    out = tmp_path / "events.jsonl"
    result = await export_events(kafka_bootstrap, out)
    assert result.skipped >= 1
    mine = [json.loads(line) for line in out.read_text().splitlines() if user in line]
    assert [e["type"] for e in mine] == ["view", "view", "purchase"]
    assert read_events_jsonl(out)[user] == ["i0", "i1", "i2"]
    assert read_events_jsonl(out, event_types=["purchase"])[user] == ["i2"]


async def test_export_leaves_out_what_a_forgotten_user_did_before_the_forget(kafka_bootstrap, redis_client, tmp_path):
    from services.common.stores.user_state import RedisUserStateStore, read_forgotten

    ensure_topics(kafka_bootstrap, partitions=2)
    gone, kept = f"gone-{uuid.uuid4().hex[:8]}", f"kept-{uuid.uuid4().hex[:8]}"
    events = [events_pb2.Event(event_id=f"{user}-{n}", user_id=user, item_id=f"i{n}", type=events_pb2.EVENT_TYPE_VIEW,
                               occurred_at=Timestamp(seconds=1_700_000_000 + n))
              for user in (gone, kept) for n in range(3)]
    with EventProducer(kafka_bootstrap) as producer:
        producer.send_events(events)
    # Forgotten between its events: the one after the forget (a returning shopper) stays.
    await RedisUserStateStore(redis_client).forget(gone, now_ms=1_700_000_001_000)

    out = tmp_path / "events.jsonl"
    result = await export_events(kafka_bootstrap, out, forgotten=await read_forgotten(redis_client))
    sequences = read_events_jsonl(out)
    assert result.forgotten == 2
    assert sequences[gone] == ["i2"] and sequences[kept] == ["i0", "i1", "i2"]
