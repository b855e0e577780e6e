import uuid

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from shopstream.events.v1 import events_pb2

from services.contract import topics
from services.contract.producer import EventProducer, ensure_topics
from services.contract.validation import InvalidEvent
from support.kafka import read_topic_async

pytestmark = pytest.mark.integration


def event(user: str, n: int, **kw) -> events_pb2.Event:
    fields = dict(event_id=f"{user}-{n}", user_id=user, item_id=f"i{n}", type=events_pb2.EVENT_TYPE_VIEW,
                  occurred_at=Timestamp(seconds=1_700_000_000 + n))
    fields.update(kw)
    return events_pb2.Event(**fields)


@pytest.fixture(scope="module")
def producer(kafka_bootstrap):
    ensure_topics(kafka_bootstrap, partitions=2)
    with EventProducer(kafka_bootstrap) as p:
        yield p


def test_ensure_topics_is_idempotent(kafka_bootstrap, producer):
    assert ensure_topics(kafka_bootstrap, partitions=2) == []


async def test_send_events_roundtrip_keyed_by_user(kafka_bootstrap, producer):
    user = f"u-{uuid.uuid4().hex[:8]}"
    sent = [event(user, n) for n in range(5)]
    assert producer.send_events(sent) == 5
    records = [r for r in await read_topic_async(kafka_bootstrap, topics.EVENTS) if r.key == user.encode()]
    assert [events_pb2.Event.FromString(r.value) for r in records] == sent  # one partition, in order
    assert len({r.partition for r in records}) == 1


async def test_invalid_event_rejected_before_anything_is_sent(kafka_bootstrap, producer):
    user = f"u-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidEvent) as info:
        producer.send_events([event(user, 1), event(user, 2, item_id="")])
    assert info.value.reason == "missing_item_id"
    producer.flush()
    assert not [r for r in await read_topic_async(kafka_bootstrap, topics.EVENTS) if r.key == user.encode()]


async def test_send_raw_keeps_bytes(kafka_bootstrap, producer):
    key = uuid.uuid4().hex.encode()
    meta = producer.send_raw(topics.EVENTS_DEAD_LETTER, key, b"\x00raw\xff")
    assert meta.offset >= 0
    records = [r for r in await read_topic_async(kafka_bootstrap, topics.EVENTS_DEAD_LETTER) if r.key == key]
    assert [r.value for r in records] == [b"\x00raw\xff"]
