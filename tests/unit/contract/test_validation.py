import json

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from shopstream.catalog.v1 import catalog_pb2
from shopstream.events.v1 import events_pb2

from services.common.errors import InvalidArgument
from services.contract.validation import (
    MAX_EVENT_BYTES, InvalidEvent, decode_catalog_item, decode_event, validate_catalog_item, validate_event,
)


def make_event(**overrides) -> events_pb2.Event:
    fields = dict(event_id="e1", user_id="u1", item_id="i1", type=events_pb2.EVENT_TYPE_VIEW,
                  occurred_at=Timestamp(seconds=1_700_000_000))
    fields.update(overrides)
    return events_pb2.Event(**fields)


def reason_of(fn, *args) -> str:
    with pytest.raises(InvalidEvent) as info:
        fn(*args)
    assert info.value.message
    return info.value.reason


def test_valid_event_passes():
    validate_event(make_event())


def test_invalid_event_is_an_invalid_argument():
    assert issubclass(InvalidEvent, InvalidArgument)


@pytest.mark.parametrize("overrides, reason", [
    ({"event_id": ""}, "missing_event_id"),
    ({"user_id": ""}, "missing_user_id"),
    ({"item_id": ""}, "missing_item_id"),
    ({"type": events_pb2.EVENT_TYPE_UNSPECIFIED}, "unknown_type"),
    ({"type": 42}, "unknown_type"),
    ({"occurred_at": None}, "missing_occurred_at"),
    ({"user_id": "u" * 257}, "field_too_long"),
    ({"session_id": "s" * 257}, "field_too_long"),
])
def test_each_event_reason(overrides, reason):
    assert reason_of(validate_event, make_event(**overrides)) == reason


def test_decode_protobuf_roundtrip():
    ev = make_event(type=events_pb2.EVENT_TYPE_PURCHASE)
    assert decode_event(ev.SerializeToString()) == ev


def test_decode_json_with_short_enum_names():
    raw = json.dumps({"event_id": "e1", "user_id": "u1", "itemId": "i1", "type": "add-to-cart",
                      "occurred_at": "2024-01-01T00:00:00Z", "context": {"device": "mobile"},
                      "future_field": 1}).encode()
    ev = decode_event(b"  " + raw)
    assert ev.type == events_pb2.EVENT_TYPE_ADD_TO_CART
    assert ev.item_id == "i1"
    assert ev.context.device == events_pb2.DEVICE_MOBILE
    assert ev.occurred_at.seconds == 1704067200


def test_decode_json_with_full_enum_name():
    raw = b'{"event_id":"e","user_id":"u","item_id":"i","type":"EVENT_TYPE_PURCHASE","occurred_at":"2024-01-01T00:00:00Z"}'
    assert decode_event(raw).type == events_pb2.EVENT_TYPE_PURCHASE


@pytest.mark.parametrize("raw, reason", [
    (b"\xff\xfe garbage", "bad_encoding"),
    (b'{"event_id": ', "bad_json"),
    (b'{"event_id": "e", "user_id": ["not a string"]}', "bad_json"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":"teleport","occurred_at":"2024-01-01T00:00:00Z"}',
     "unknown_type"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":"view"}', "missing_occurred_at"),
    (b'{"user_id":"u","item_id":"i","type":"view","occurred_at":"2024-01-01T00:00:00Z"}', "missing_event_id"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":"view","occurred_at":"yesterday"}', "bad_json"),
    (b'{' + b' ' * MAX_EVENT_BYTES + b'}', "oversized"),
    (b"", "missing_event_id"),  # empty protobuf is a valid, empty message
])
def test_decode_rejects(raw, reason):
    assert reason_of(decode_event, raw) == reason


def test_decode_json_non_utf8():
    assert reason_of(decode_event, b'{"event_id": "\xff"}') == "bad_encoding"


def test_catalog_validation():
    item = catalog_pb2.CatalogItem(item_id="i1", title="t", category="c", price=9.5, in_stock=True, attributes=["a"])
    validate_catalog_item(item)
    assert decode_catalog_item(item.SerializeToString()) == item
    assert decode_catalog_item(b'{"item_id": "i1", "title": "t", "category": "c", "price": 9.5, '
                               b'"in_stock": true, "attributes": ["a"]}') == item
    assert reason_of(validate_catalog_item, catalog_pb2.CatalogItem()) == "missing_item_id"
    assert reason_of(validate_catalog_item, catalog_pb2.CatalogItem(item_id="i", price=-1)) == "bad_price"
    assert reason_of(validate_catalog_item, catalog_pb2.CatalogItem(item_id="i", price=float("nan"))) == "bad_price"
    assert reason_of(validate_catalog_item, catalog_pb2.CatalogItem(item_id="i", title="x" * 2000)) == "field_too_long"
    assert reason_of(decode_catalog_item, b"{nope") == "bad_json"


NOW = 1_800_000_000.0  # the receiver's clock in the timestamp tests


@pytest.mark.parametrize("seconds, reason", [
    (1_000_000_000_000, "occurred_at_in_future"),  # the year 33658
    (int(NOW) + 3601, "occurred_at_in_future"),  # just over the default skew
    (-100 * 365 * 86400, "occurred_at_too_old"),  # a century before the epoch
    (946_684_799, "occurred_at_too_old"),  # one second before 2000-01-01
])
def test_occurred_at_out_of_bounds(seconds, reason):
    ev = make_event(occurred_at=Timestamp(seconds=seconds))
    with pytest.raises(InvalidEvent) as info:
        validate_event(ev, now=NOW)
    assert info.value.reason == reason and "occurred_at" in info.value.message


@pytest.mark.parametrize("seconds", [946_684_800, int(NOW), int(NOW) + 3600])
def test_occurred_at_within_bounds(seconds):
    validate_event(make_event(occurred_at=Timestamp(seconds=seconds)), now=NOW)


def test_the_future_skew_is_the_callers_to_choose():
    ev = make_event(occurred_at=Timestamp(seconds=int(NOW) + 600))
    validate_event(ev, now=NOW)
    with pytest.raises(InvalidEvent, match="more than 60 s ahead"):
        validate_event(ev, now=NOW, max_future_skew_s=60)


def test_decoded_records_get_the_same_timestamp_bounds():
    raw = b'{"event_id":"e","user_id":"u","item_id":"i","type":"view","occurred_at":"1999-12-31T23:59:59Z"}'
    assert reason_of(decode_event, raw) == "occurred_at_too_old"
    future = make_event(occurred_at=Timestamp(seconds=1_000_000_000_000))
    assert reason_of(decode_event, future.SerializeToString()) == "occurred_at_in_future"
