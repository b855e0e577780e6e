"""Every bad record is contained (property tests, hypothesis).

Whatever a record's value is (arbitrary bytes, arbitrary JSON, JSON shaped like an event
with any value in any field, a tombstone, non-finite or huge numbers, deep nesting), the
decoder answers an event or an InvalidEvent with a reason, never another exception; and
the batch processor, on the in-memory stores with a recording dead-letter sink, raises
nothing, applies every valid event of the batch and dead-letters every other record,
each exactly once, with its reason.
"""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from shopstream.catalog.v1 import catalog_pb2
from shopstream.events.v1 import events_pb2

from services.common.stores.memory import MemoryCatalogStore, MemoryTrendingStore, MemoryUserStateStore
from services.contract.limits import MAX_EVENT_BYTES, MAX_ID_CHARS
from services.contract.validation import InvalidEvent, decode_catalog_item, decode_event
from services.features.embeddings import EmbeddingRefresher
from services.features.metrics import FeaturesMetrics
from services.features.processing import CatalogBatchProcessor, EventBatchProcessor, SourceRecord
from services.contract.topics import DLQ_KEY_BYTES_HEADER, DLQ_VALUE_BYTES_HEADER
from services.features.topics import DLQ_MAX_KEY_BYTES, TopicDeadLetters
from services.contract import topics

# No example database: a failure prints the example to reproduce it; CI runs in a fresh clone anyway.
PROPERTY = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
OCCURRED = "2024-01-01T00:00:00Z"

# Any JSON value, nested.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# Raw JSON fragments that Python's json.dumps never writes but a producer can.
hostile_fragments = st.sampled_from([
    "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "true", "false", "null", "1.5", "0", "-1",
    "2147483648", "99999999999999999999999", "9" * 5000, '"\\ud800"', '"\\u0000"', '""', '"x"',
    '"' + "x" * (MAX_ID_CHARS + 1) + '"', "[" * 2000 + "]" * 2000, "{" * 3 + "}" * 3, "[]", "{}",
    '"view"', '"mobile"', '{"device": 1e400}', '{"device": true}', '{"page": 5}', '"9999-99-99T00:00:00Z"',
    '"1970-01-01T00:00:00Z"', '"2999-01-01T00:00:00Z"', '"0001-01-01T00:00:00Z"',
])
EVENT_FIELDS = ["event_id", "eventId", "user_id", "userId", "item_id", "itemId", "type", "occurred_at",
                "occurredAt", "session_id", "context", "unknown"]


@st.composite
def event_shaped_json(draw) -> bytes:
    """A JSON object with the event's fields, each one left out, valid, any JSON or a hostile fragment."""
    valid = {"event_id": '"e"', "user_id": '"u"', "item_id": '"i"', "type": '"view"', "occurred_at": f'"{OCCURRED}"'}
    parts = []
    for name in draw(st.lists(st.sampled_from(EVENT_FIELDS), max_size=9)):
        kind = draw(st.sampled_from(["valid", "json", "hostile"]))
        if kind == "valid" and name in valid:
            value = valid[name]
        elif kind == "hostile":
            value = draw(hostile_fragments)
        else:
            value = json.dumps(draw(json_values))
        parts.append(f"{json.dumps(name)}: {value}")
    return ("{" + ", ".join(parts) + "}").encode()


bad_values = st.one_of(
    st.none(),  # a tombstone
    st.binary(max_size=256),
    st.binary(max_size=64).map(lambda b: b"{" + b),
    json_values.map(lambda v: json.dumps(v).encode()),
    event_shaped_json(),
    st.sampled_from([b"", b"{", b"\xff\xfe\x00", b"{\xff}", b'{"a": 1} trailing', b" " * 10,
                     b"{" + b" " * MAX_EVENT_BYTES + b"}", b"\x0a" * 2000]),
)


def _decode_outcome(decode, raw):
    """The decoded message, or the InvalidEvent: any other exception fails the test."""
    try:
        return decode(raw)
    except InvalidEvent as exc:
        assert exc.reason and exc.reason.isidentifier() and exc.message
        return exc


@PROPERTY
@given(bad_values)
def test_the_event_decoder_raises_nothing_but_invalid_event(raw):
    outcome = _decode_outcome(decode_event, raw)
    if isinstance(outcome, events_pb2.Event):  # then it is a whole event
        assert outcome.event_id and outcome.user_id and outcome.item_id and outcome.type in (1, 2, 3, 4)


@PROPERTY
@given(bad_values)
def test_the_catalog_decoder_raises_nothing_but_invalid_event(raw):
    outcome = _decode_outcome(decode_catalog_item, raw)
    if isinstance(outcome, catalog_pb2.CatalogItem):
        assert outcome.item_id and outcome.price >= 0


@pytest.mark.parametrize("raw, reason", [
    (None, "null_value"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":"view","occurred_at":"' + OCCURRED.encode() + b'","x":'
     + b"[" * 2000 + b"]" * 2000 + b"}", "bad_json"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":1e400,"occurred_at":"' + OCCURRED.encode() + b'"}',
     "bad_json"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":true,"occurred_at":"' + OCCURRED.encode() + b'"}',
     "bad_json"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":"view","context":"mobile","occurred_at":"'
     + OCCURRED.encode() + b'"}', "bad_json"),
    (b'{"event_id":"e","user_id":"u","user_id":"v","item_id":"i","type":"view","occurred_at":"'
     + OCCURRED.encode() + b'"}', "bad_json"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":NaN,"occurred_at":"' + OCCURRED.encode() + b'"}',
     "bad_json"),
    (b"\x0a" * 2000, "bad_encoding"),
])
def test_the_poison_kinds_the_fault_matrix_found(raw, reason):
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw)
    assert info.value.reason == reason


class RecordingDLQ:
    def __init__(self):
        self.sent: list[tuple[SourceRecord, str]] = []

    async def send(self, record, reason):
        self.sent.append((record, reason))

    async def flush(self):
        pass


def _good_event(n: int, user: str, type_code: int) -> bytes:
    ev = events_pb2.Event(event_id=f"good-{n}", user_id=user, item_id=f"i{n}", type=type_code)
    ev.occurred_at.seconds = 1_700_000_000 + n
    return ev.SerializeToString()


# A batch: each entry a good event (user, type) or a bad value, in any order.
batches = st.lists(
    st.one_of(st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.integers(1, 4)), bad_values.map(lambda v: [v])),
    max_size=40,
)

_EXECUTOR = ThreadPoolExecutor(1)


@PROPERTY
@given(batches)
def test_a_batch_applies_every_valid_event_and_dead_letters_every_other_record(batch):
    metrics = FeaturesMetrics(CollectorRegistry())
    users, trending, dlq = MemoryUserStateStore(), MemoryTrendingStore(), RecordingDLQ()
    refresher = EmbeddingRefresher(users, SimpleNamespace(bundle=None), _EXECUTOR, metrics)
    processor = EventBatchProcessor(users, trending, refresher, dlq, metrics)
    records, expected = [], {}  # expected: user -> items in order
    for offset, entry in enumerate(batch):
        if isinstance(entry, tuple):
            user, type_code = entry
            value = _good_event(offset, user, type_code)
            expected.setdefault(user, []).append(f"i{offset}")
        else:
            value = entry[0]
        records.append(SourceRecord(topics.EVENTS, 0, offset, 1.0, b"k", value))

    applied = asyncio.run(processor.process(records))  # nothing escapes

    good = sum(len(items) for items in expected.values())
    assert applied == good
    dead = {rec.offset: reason for rec, reason in dlq.sent}
    assert len(dead) == len(dlq.sent) == len(records) - good  # each bad record once, no good one
    assert all(isinstance(reason, str) and reason for reason in dead.values())
    for offset, entry in enumerate(batch):
        assert (offset in dead) == (not isinstance(entry, tuple))
    states = asyncio.run(users.get_states(sorted(expected), 100))
    assert {s.user_id: s.history for s in states} == expected
    for user, items in expected.items():
        assert users.counters(user)["events"] == len(items)


@PROPERTY
@given(st.lists(st.one_of(st.integers(0, 5).map(lambda n: [n]), bad_values.map(lambda v: (v,))), max_size=30))
def test_a_catalog_batch_upserts_valid_items_and_dead_letters_every_other_record(batch):
    catalog, dlq = MemoryCatalogStore(), RecordingDLQ()
    processor = CatalogBatchProcessor(catalog, dlq, FeaturesMetrics(CollectorRegistry()))
    records, valid, invalid = [], set(), set()
    for offset, entry in enumerate(batch):
        if isinstance(entry, list):
            value = catalog_pb2.CatalogItem(item_id=f"c{entry[0]}", price=1.0).SerializeToString()
        else:
            value = entry[0]
        outcome = _decode_outcome(decode_catalog_item, value)
        if isinstance(outcome, InvalidEvent):
            invalid.add(offset)
        else:
            valid.add(outcome.item_id)
        records.append(SourceRecord(topics.CATALOG, 0, offset, 1.0, None, value))

    asyncio.run(processor.process(records))  # nothing escapes

    assert set(asyncio.run(catalog.snapshot()).items) == valid
    assert sorted(rec.offset for rec, _ in dlq.sent) == sorted(invalid)
    assert all(reason for _, reason in dlq.sent)


def test_a_decoder_bug_dead_letters_the_record_as_undecodable(monkeypatch):
    def broken(raw):
        raise KeyError("a bug")

    monkeypatch.setattr("services.features.processing.decode_event", broken)
    metrics = FeaturesMetrics(CollectorRegistry())
    users, dlq = MemoryUserStateStore(), RecordingDLQ()
    refresher = EmbeddingRefresher(users, SimpleNamespace(bundle=None), _EXECUTOR, metrics)
    processor = EventBatchProcessor(users, MemoryTrendingStore(), refresher, dlq, metrics)
    assert asyncio.run(processor.process([SourceRecord(topics.EVENTS, 0, 7, 1.0, b"k", b"x")])) == 0
    assert [(rec.offset, reason) for rec, reason in dlq.sent] == [(7, "undecodable")]


class _Topic:
    def __init__(self, max_request_size: int):
        self.app = SimpleNamespace(conf=SimpleNamespace(producer_max_request_size=max_request_size))


@given(st.integers(0, 3_000_000), st.integers(0, 5000))
@settings(max_examples=50, deadline=None, database=None)
def test_a_dead_letter_fits_the_producer_request_or_says_what_was_cut(value_len, key_len):
    limit = 1_000_000
    sink = TopicDeadLetters(_Topic(limit))
    rec = SourceRecord(topics.EVENTS, 3, 42, 1.0, b"k" * key_len, b"v" * value_len)
    key, value, headers = sink.letter(rec, "oversized")
    headers = dict(headers)
    assert headers[topics.DLQ_REASON_HEADER] == b"oversized"
    assert headers[topics.DLQ_SOURCE_HEADER] == f"{topics.EVENTS}/3/42".encode()
    assert len(key) + len(value) + sum(len(k) + len(v) for k, v in headers.items()) < limit
    assert value == rec.value[:len(value)] and key == rec.key[:len(key)]
    if len(value) < value_len:
        assert headers[DLQ_VALUE_BYTES_HEADER] == str(value_len).encode()
    else:
        assert DLQ_VALUE_BYTES_HEADER not in headers
    if key_len > DLQ_MAX_KEY_BYTES:
        assert len(key) == DLQ_MAX_KEY_BYTES and headers[DLQ_KEY_BYTES_HEADER] == str(key_len).encode()
    else:
        assert key == rec.key and DLQ_KEY_BYTES_HEADER not in headers


def test_a_tombstone_goes_to_the_dead_letter_topic_as_one():
    key, value, headers = TopicDeadLetters(_Topic(1_000_000)).letter(
        SourceRecord(topics.EVENTS, 0, 1, 1.0, b"u", None), "null_value")
    assert (key, value) == (b"u", None) and dict(headers)[topics.DLQ_REASON_HEADER] == b"null_value"
