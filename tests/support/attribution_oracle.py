"""A small shopper script for the attribution tests: served lists (impressions) and the events
that follow them, with the counts the attribution job must reach (the oracle).

Every list holds items of its own, so an event without a ``recommendation_id`` has one list
it can belong to: the oracle needs no second implementation of the join.
"""
from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp
from shopstream.events.v1 import events_pb2



def _ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


@dataclass
class Script:
    experiment: str
    impressions: list[events_pb2.Impression] = field(default_factory=list)
    events: list[events_pb2.Event] = field(default_factory=list)
    expected: dict[str, Counter] = field(default_factory=dict)  # variant -> counters
    unattributed: Counter = field(default_factory=Counter)  # "<reason>:<type>" -> n

    def publish_impressions(self, producer) -> None:
        producer.send_impressions(self.impressions)

    def publish_events(self, producer, events=None) -> None:
        producer.send_events(self.events if events is None else events)


def shop(users: int = 6, lists_per_user: int = 4, seed: int = 0, implicit: bool = True) -> Script:
    """Lists served a few minutes ago; per list a click with its id (some with a position, some
    without), a click without any id on one of its items, sometimes an add to cart and a
    purchase (with a value), plus per user one click naming a list that never existed.
    ``implicit=False``: no event without an id (every event names its list)."""
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    script = Script(experiment=f"exp-{tag}")
    base = int(time.time() * 1000) - 5 * 60_000
    n = 0

    def event(user, item, type_code, at, rid="", position=None, value=None):
        nonlocal n
        n += 1
        ev = events_pb2.Event(event_id=f"{tag}-e{n}", user_id=user, item_id=item, type=type_code,
                              occurred_at=_ts(at), recommendation_id=rid)
        if position is not None:
            ev.position = position
        if value is not None:
            ev.value = value
        script.events.append(ev)

    for u in range(users):
        user, variant = f"{tag}-u{u}", ("control", "treatment")[u % 2]
        counts = script.expected.setdefault(variant, Counter())
        counts["users"] = counts["users"] + 1
        for k in range(lists_per_user):
            rid, served = f"{tag}-r{u}-{k}", base + (u * lists_per_user + k) * 1000
            items = [f"{tag}-i{u}-{k}-{j}" for j in range(5)]
            script.impressions.append(events_pb2.Impression(
                recommendation_id=rid, user_id=user, variant=variant, experiment=script.experiment,
                model_version="m1", surface="recommend", item_ids=items, served_at=_ts(served)))
            counts["impressions"] += 1
            at = served + 2000
            pos = rng.randrange(5)
            event(user, items[pos], 2, at, rid=rid, position=pos if k % 2 else None)
            counts["clicks"] += 1
            if implicit:
                event(user, items[(pos + 1) % 5], 2, at + 1)  # no id: the window finds this list
                counts["clicks"] += 1
            counts["clicked_lists"] += 1
            if rng.random() < 0.5:
                event(user, items[pos], 3, at + 2, rid=rid)
                counts["add_to_carts"] += 1
                counts["carted_lists"] += 1
                value = round(rng.uniform(1, 50), 2)
                event(user, items[pos], 4, at + 3, rid=rid, value=value)
                counts["purchases"] += 1
                counts["purchased_lists"] += 1
                counts["revenue_micros"] += round(value * 1_000_000)
        event(user, f"{tag}-x{u}", 2, base + 500, rid=f"{tag}-nope-{u}")
        script.unattributed["unknown_recommendation:click"] += 1
    return script
