"""Every poison kind, interleaved with good events on the same partitions, against the real
worker: each one is dead-lettered with its reason (a value too large for the dead-letter
topic cut, with its original size), every good event around it is applied once, the worker
stays live and stops cleanly on SIGTERM."""
from __future__ import annotations

import json

import pytest
from kafka import KafkaProducer

from faults.harness import Publisher, all_applied, compare, wait_until
from services.contract import topics
from services.contract.topics import DLQ_VALUE_BYTES_HEADER
from services.stack.processes import http_ok
from support.kafka import read_topic

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

OCCURRED = '"occurred_at": "2026-01-01T00:00:00Z"'


def _json(body: str) -> bytes:
    return ("{" + body + "}").encode()


def poisons(tag: str) -> dict[str, tuple[bytes | None, str]]:
    """name -> (value, the reason it must be dead-lettered with); ``tag`` marks each value."""
    ids = f'"event_id": "{tag}-x", "user_id": "u", "item_id": "i"'
    return {
        "nested_2000_deep": (_json(f'{ids}, "type": "view", {OCCURRED}, "tag": "{tag}", "x": '
                                   + "[" * 2000 + "]" * 2000), "bad_json"),
        "type_1e400": (_json(f'{ids}, "type": 1e400, {OCCURRED}, "tag": "{tag}"'), "bad_json"),
        "type_true": (_json(f'{ids}, "type": true, {OCCURRED}, "tag": "{tag}"'), "bad_json"),
        "type_nan": (_json(f'{ids}, "type": NaN, {OCCURRED}, "tag": "{tag}"'), "bad_json"),
        "context_string": (_json(f'{ids}, "type": "view", "context": "mobile", {OCCURRED}, "tag": "{tag}"'),
                           "bad_json"),
        "duplicate_key": (_json(f'{ids}, "user_id": "v", "type": "view", {OCCURRED}, "tag": "{tag}"'), "bad_json"),
        "tombstone": (None, "null_value"),
        "empty": (b"", "missing_event_id"),
        "invalid_utf8": (b'{"tag": "' + tag.encode() + b'", "user_id": "\xff\xfe"}', "bad_encoding"),
        "garbage": (b"\xff\x00garbage-" + tag.encode(), "bad_encoding"),
        "not_an_object": (json.dumps([tag]).encode(), "bad_encoding"),  # not "{": read as protobuf
        "json_string": (b"{" + json.dumps(tag).encode(), "bad_json"),
        "missing_user": (_json(f'"event_id": "{tag}-m", "item_id": "i", "type": "view", {OCCURRED}'),
                         "missing_user_id"),
        "long_user": (_json(f'"event_id": "{tag}-l", "user_id": "{"u" * 300}", "item_id": "i", "type": "view", '
                            f'{OCCURRED}'), "field_too_long"),
        "unknown_type": (_json(f'{ids}, "type": "teleport", {OCCURRED}, "tag": "{tag}"'), "unknown_type"),
        "type_99": (_json(f'{ids}, "type": 99, {OCCURRED}, "tag": "{tag}"'), "unknown_type"),
        "far_future": (_json(f'{ids}, "type": "view", "occurred_at": "2999-01-01T00:00:00Z", "tag": "{tag}"'),
                       "occurred_at_in_future"),
        "oversized_100k": (_json(f'{ids}, "type": "view", {OCCURRED}, "tag": "{tag}", "pad": "{"p" * 100_000}"'),
                           "oversized"),
        # Past the worker's producer limit (1 MB; its dead letter is cut to fit) and past one fetch
        # (SHOPSTREAM_FEATURES_MAX_FETCH_BYTES, 4 MiB): the consumer still gets it, alone.
        "oversized_6m": (_json(f'"tag": "{tag}", "pad": "{"p" * 6_000_000}"'), "oversized"),
    }


@pytest.mark.faults_fast
def test_every_poison_kind_is_dead_lettered_and_the_good_events_around_it_applied(rig):
    users = [f"user-{n}" for n in range(4)]
    publisher = Publisher(rig.kafka.bootstrap_servers, users)
    bad = poisons(publisher.tag)
    big = KafkaProducer(bootstrap_servers=rig.kafka.bootstrap_servers, acks="all", max_request_size=16 * 1024 * 1024)
    try:
        for n, (name, (value, _)) in enumerate(bad.items()):
            publisher.publish(3)  # good events, then a poison on the same key (so the same batch stream)
            key = users[n % len(users)].encode()
            if name == "oversized_6m":
                big.send(topics.EVENTS, key=key, value=value).get(timeout=20)
            else:
                publisher.send_raw(key, value)
        publisher.publish(3)
        acked, unacked = publisher.outcome()
    finally:
        big.close()
    assert not unacked
    wait_until(lambda: all_applied(rig.client, acked), 60, "every good event applied")
    report = compare(rig.client, acked)
    assert (report.lost, report.doubled, report.mismatches) == ([], [], [])

    def dead_letters():
        records = [r for r in read_topic(rig.kafka.bootstrap_servers, topics.EVENTS_DEAD_LETTER)]
        return records if len(records) >= len(bad) else None
    records = wait_until(dead_letters, 60, "every poison dead-lettered", interval=0.5)
    assert len(records) == len(bad)  # each once
    by_source = {dict(r.headers)[topics.DLQ_SOURCE_HEADER].decode(): r for r in records}
    assert len(by_source) == len(bad)
    reasons = sorted(dict(r.headers)[topics.DLQ_REASON_HEADER].decode() for r in records)
    assert reasons == sorted(reason for _, reason in bad.values())
    values = {r.value for r in records}
    for name, (value, _) in bad.items():
        if name != "oversized_6m":
            assert value in values, name  # the original bytes (None for the tombstone)
    (cut,) = [r for r in records if DLQ_VALUE_BYTES_HEADER in dict(r.headers)]
    assert int(dict(cut.headers)[DLQ_VALUE_BYTES_HEADER]) == len(bad["oversized_6m"][0])
    assert bad["oversized_6m"][0].startswith(cut.value) and len(cut.value) < 1_000_000
    assert dict(cut.headers)[topics.DLQ_SOURCE_HEADER].decode().startswith(topics.EVENTS + "/")

    assert http_ok(rig.stack.ports["features_metrics"], "/healthz/live")
    assert rig.stop_worker() == 0  # SIGTERM: a clean stop
    print(f"poison x{len(bad)}: {report}; dead-lettered {len(records)}")
