"""Attribution's pure parts: time buckets, decoding impressions, the event view."""
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from shopstream.events.v1 import events_pb2

from services.contract.validation import InvalidEvent
from services.features.attribution import decode_impression, event_record
from services.features.attribution_store import bucket_start


@pytest.mark.parametrize("ms, size, start", [(0, 60_000, 0), (59_999, 60_000, 0), (60_000, 60_000, 60_000),
                                             (1_800_000_123_456, 300_000, 1_800_000_000_000), (-1, 60_000, -60_000)])
def test_bucket_start(ms, size, start):
    assert bucket_start(ms, size) == start


def test_decode_impression_binary_json_and_fallback_time():
    imp = events_pb2.Impression(recommendation_id="r", user_id="u", variant="A", experiment="x", item_ids=["1", "2"],
                                served_at=Timestamp(seconds=10, nanos=5_000_000))
    got = decode_impression(imp.SerializeToString(), fallback_ms=99)
    assert (got.served_ms, got.item_ids, got.experiment) == (10_005, ("1", "2"), "x")
    assert decode_impression(b'{"recommendationId":"r","userId":"u","variant":"A"}', fallback_ms=99).served_ms == 99


@pytest.mark.parametrize("raw, reason", [(None, "null_value"), (b"\xff\x00", "bad_encoding"),
                                         (b'{"userId":"u","variant":"A"}', "missing_recommendation_id"),
                                         (b'{"recommendationId":"r","userId":"u","variant":"A\\u001f"}', "bad_id")])
def test_bad_impressions(raw, reason):
    with pytest.raises(InvalidEvent) as exc:
        decode_impression(raw, fallback_ms=0)
    assert exc.value.reason == reason


def test_event_record_values_only_for_purchases():
    ev = events_pb2.Event(event_id="e", user_id="u", item_id="i", type=4, occurred_at=Timestamp(seconds=2),
                          recommendation_id="r", position=3, value=2.5)
    rec = event_record(ev)
    assert (rec.value_micros, rec.position, rec.occurred_ms, rec.recommendation_id) == (2_500_000, 3, 2000, "r")
    ev.type = 2
    assert event_record(ev).value_micros == 0
    ev.ClearField("position")
    assert event_record(ev).position == -1
