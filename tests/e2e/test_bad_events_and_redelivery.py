"""Malformed events go to the dead-letter topic; redelivery changes nothing."""
from __future__ import annotations

import json
import uuid

import pytest

from services.contract import topics
from support.helpers import event, wait_for
from support.kafka import read_topic
from support.redis_state import user_snapshot

pytestmark = pytest.mark.e2e


def test_malformed_events_are_dead_lettered_and_valid_ones_applied(system, producer, catalog_items):
    user = f"mixed-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex
    good = [event(user, catalog_items[i], "VIEW") for i in range(4)]
    bad = {
        "bad_encoding": b"\xff\x00garbage" + marker.encode(),
        "bad_json": b'{"user_id": "' + marker.encode() + b'", ',
        "unknown_type": json.dumps({"eventId": marker + "t", "userId": user, "itemId": catalog_items[0],
                                    "type": "TELEPORT", "occurredAt": "2026-11-22T10:00:00Z"}).encode(),
        "missing_user_id": json.dumps({"eventId": marker + "u", "itemId": catalog_items[0],
                                       "type": "EVENT_TYPE_VIEW", "occurredAt": "2026-11-22T10:00:00Z"}).encode(),
    }
    # Interleave: good, bad, good, bad, ... all on the same key so order is kept.
    for i, (reason, raw) in enumerate(bad.items()):
        producer.send_raw(topics.EVENTS, user.encode(), good[i].SerializeToString())
        producer.send_raw(topics.EVENTS, user.encode(), raw)
    producer.flush()

    def dead_letters():
        records = [r for r in read_topic(system.kafka, topics.EVENTS_DEAD_LETTER) if marker.encode() in r.value]
        return records if len(records) == len(bad) else None

    records = wait_for(dead_letters, timeout=10.0, interval=0.2)
    reasons = {dict(r.headers)[topics.DLQ_REASON_HEADER].decode() for r in records}
    assert reasons == set(bad), reasons
    for r in records:
        assert dict(r.headers)[topics.DLQ_SOURCE_HEADER].decode().startswith(topics.EVENTS + "/")

    state = wait_for(lambda: (s := user_snapshot(system.redis, user)) and len(s["history"]) == 4 and s, timeout=5.0)
    assert state["history"] == [e.item_id for e in good]
    for name in ("features", "ranker", "gateway"):
        assert system.stack.processes[name].alive(), f"{name} died"


def test_same_events_twice_leave_the_state_of_once(system, producer, catalog_items):
    user = f"twice-{uuid.uuid4().hex[:8]}"
    items = tuple(catalog_items[40:46])  # used by no other test, so their trending scores are ours
    events = [event(user, items[i], kind)
              for i, kind in enumerate(["VIEW", "CLICK", "ADD_TO_CART", "PURCHASE", "VIEW", "PURCHASE"])]
    producer.send_events(events, wait=True)
    # Trending is recorded by its own call after the user's apply script: wait for both.
    once = wait_for(lambda: (s := user_snapshot(system.redis, user, items)) and s["counts"].get("events") == "6"
                    and all(score is not None for score in s["trending"].values()) and s, timeout=5.0)
    duplicates_before = system.features_metric("shopstream_features_events_duplicate_total")

    producer.send_events(events, wait=True)  # redelivery: same event ids
    wait_for(lambda: system.features_metric("shopstream_features_events_duplicate_total") >= duplicates_before + 6,
             timeout=5.0)
    twice = user_snapshot(system.redis, user, items)
    assert twice == once
