"""Event.recommendation_id / position / value (issue 13): optional, bounded, validated."""
from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from shopstream.events.v1 import events_pb2

from services.contract.limits import MAX_ID_CHARS, MAX_POSITION
from services.contract.validation import InvalidEvent, validate_event, validate_impression


def event(**fields) -> events_pb2.Event:
    return events_pb2.Event(event_id="e1", user_id="u1", item_id="i1", type=events_pb2.EVENT_TYPE_CLICK,
                            occurred_at=Timestamp(seconds=1_700_000_000), **fields)


def test_old_producers_keep_working_and_the_new_fields_are_accepted():
    validate_event(event())
    validate_event(event(recommendation_id="r" * MAX_ID_CHARS, position=0, value=0.0))
    validate_event(event(recommendation_id="abc", position=MAX_POSITION, value=19.99))


@pytest.mark.parametrize("fields, reason", [
    ({"recommendation_id": "r" * (MAX_ID_CHARS + 1)}, "field_too_long"),
    ({"position": -1}, "bad_position"),
    ({"position": MAX_POSITION + 1}, "bad_position"),
    ({"value": -0.01}, "bad_value"),
    ({"value": float("nan")}, "bad_value"),
    ({"value": float("inf")}, "bad_value"),
])
def test_bad_attribution_fields_are_refused(fields, reason):
    with pytest.raises(InvalidEvent) as err:
        validate_event(event(**fields))
    assert err.value.reason == reason and next(iter(fields)) in str(err.value)


def test_impressions_need_a_recommendation_id():
    validate_impression(events_pb2.Impression(recommendation_id="r1", user_id="u1", item_ids=["a"]))
    with pytest.raises(InvalidEvent, match="recommendation_id is required"):
        validate_impression(events_pb2.Impression(user_id="u1"))
