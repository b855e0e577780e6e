"""Attribution's pure parts: time buckets, decoding impressions, the event view."""
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from shopstream.events.v1 import events_pb2

from services.contract.validation import InvalidEvent
from services.contract import impressions
from services.features.attribution import decode_impressions, event_record
from services.features.attribution_store import bucket_start


@pytest.mark.parametrize("ms, size, start", [(0, 60_000, 0), (59_999, 60_000, 0), (60_000, 60_000, 60_000),
                                             (1_800_000_123_456, 300_000, 1_800_000_000_000), (-1, 60_000, -60_000)])
def test_bucket_start(ms, size, start):
    assert bucket_start(ms, size) == start


def decode_one(raw, fallback_ms=0, headers=None):
    [got] = decode_impressions(raw, headers, fallback_ms)
    if isinstance(got, InvalidEvent):
        raise got
    return got


def test_decode_impression_binary_json_and_fallback_time():
    imp = events_pb2.Impression(recommendation_id="r", user_id="u", variant="A", experiment="x", item_ids=["1", "2"],
                                served_at=Timestamp(seconds=10, nanos=5_000_000))
    got = decode_one(imp.SerializeToString(), fallback_ms=99)
    assert (got.served_ms, got.item_ids, got.experiment) == (10_005, ("1", "2"), "x")
    assert decode_one(b'{"recommendationId":"r","userId":"u","variant":"A"}', fallback_ms=99).served_ms == 99


@pytest.mark.parametrize("raw, reason", [(None, "null_value"), (b"\xff\x00", "bad_encoding"),
                                         (b'{"userId":"u","variant":"A"}', "missing_recommendation_id"),
                                         (b'{"recommendationId":"r","userId":"u","variant":"A\\u001f"}', "bad_id")])
def test_bad_impressions(raw, reason):
    with pytest.raises(InvalidEvent) as exc:
        decode_one(raw)
    assert exc.value.reason == reason


def test_a_batch_record_holds_many_lists_and_a_bad_one_costs_only_itself():
    good = [events_pb2.Impression(recommendation_id=f"r{n}", user_id="u", variant="A", item_ids=["1"]) for n in range(3)]
    bad = events_pb2.Impression(user_id="u", variant="A")
    [value] = impressions.batch_values([good[0], bad, *good[1:]])
    got = decode_impressions(value, list(impressions.BATCH_HEADERS), fallback_ms=7)
    assert [g.recommendation_id for g in got if not isinstance(g, InvalidEvent)] == ["r0", "r1", "r2"]
    assert [g.reason for g in got if isinstance(g, InvalidEvent)] == ["missing_recommendation_id"]
    # the same bytes without the header are read as one Impression: field 10 is none of its fields
    assert decode_impressions(value, None, 0)[0].reason == "missing_recommendation_id"
    # a mapping of headers (faust's other form) marks a batch as well
    assert len(decode_impressions(value, dict(impressions.BATCH_HEADERS), 0)) == 4


def test_batch_values_split_by_size_and_keep_order(monkeypatch):
    monkeypatch.setattr(impressions, "MAX_RECORD_BYTES", 200)
    imps = [events_pb2.Impression(recommendation_id=f"r{n:03d}", user_id="u", item_ids=["x" * 40]) for n in range(20)]
    values = list(impressions.batch_values(imps))
    assert len(values) > 1
    assert all(len(v) <= 200 + 10 for v in values)  # the bound is on the lists; framing adds bytes per list
    got = [imp for v in values for imp in impressions.decode(v, impressions.BATCH_HEADERS)]
    assert got == imps
    assert list(impressions.batch_values([])) == []


def test_event_record_values_only_for_purchases():
    ev = events_pb2.Event(event_id="e", user_id="u", item_id="i", type=4, occurred_at=Timestamp(seconds=2),
                          recommendation_id="r", position=3, value=2.5)
    rec = event_record(ev)
    assert (rec.value_micros, rec.position, rec.occurred_ms, rec.recommendation_id) == (2_500_000, 3, 2000, "r")
    ev.type = 2
    assert event_record(ev).value_micros == 0
    ev.ClearField("position")
    assert event_record(ev).position == -1
