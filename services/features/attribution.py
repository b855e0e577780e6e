"""Where events meet the lists they came from: a batch of events and impressions
(``shopstream.events.v1`` and ``shopstream.impressions.v1``, co-partitioned by user) becomes
attribution state and per-variant counters in Redis.

The rules (docs/experiments.md, "Attribution rules"): an event that names a
``recommendation_id`` counts for that list; one that names none counts for the most recent
list served to the same user within the attribution window that held the item; anything
else counts as unattributed, by reason. The join and the counting are in
``attribution_store`` (one script per user, exactly once per record id); this module
decodes, prices purchases and exports the counters to Prometheus.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

from shopstream.events.v1 import events_pb2

from services.contract import impressions, topics
from services.contract.limits import MAX_ID_CHARS
from services.contract.validation import InvalidEvent, decode_event
from services.features.attribution_store import (EventRecord, ImpressionRecord, RedisAttributionStore, SEP,
                                                 TYPE_NAMES)
from services.features.metrics import FeaturesMetrics
from services.features.processing import Record, _retrying, source_of

logger = logging.getLogger(__name__)

PURCHASE = 4
MAX_LIST_ITEMS = 1000  # a served list longer than this is not one the gateway sends


def decode_impressions(raw: bytes | None, headers, fallback_ms: int) -> list[ImpressionRecord | InvalidEvent]:
    """The served lists of one impressions record (one ``Impression``, or an ``ImpressionBatch``
    by its header: ``services.contract.impressions``), each as a record or as the InvalidEvent
    that refuses it, so a bad list in a batch costs only itself; InvalidEvent (raised) when
    the record is not one at all."""
    out: list[ImpressionRecord | InvalidEvent] = []
    for imp in impressions.decode(raw, headers):
        try:
            out.append(impression_record(imp, fallback_ms))
        except InvalidEvent as exc:
            out.append(exc)
    return out


def impression_record(imp: events_pb2.Impression, fallback_ms: int) -> ImpressionRecord:
    """The attribution view of one served list, or InvalidEvent. ``served_at`` unset: the Kafka
    timestamp (``fallback_ms``) stands in."""
    for name in ("recommendation_id", "user_id", "variant"):
        value = getattr(imp, name)
        if not value:
            raise InvalidEvent(f"missing_{name}", f"{name} is required")
        if len(value) > MAX_ID_CHARS or SEP in value:
            raise InvalidEvent("bad_id", f"{name} is too long or holds a control character")
    if len(imp.experiment) > MAX_ID_CHARS or SEP in imp.experiment:
        raise InvalidEvent("bad_id", "experiment is too long or holds a control character")
    if len(imp.item_ids) > MAX_LIST_ITEMS:
        raise InvalidEvent("too_many_items", f"{len(imp.item_ids)} items in one list")
    served = imp.served_at.seconds * 1000 + imp.served_at.nanos // 1_000_000 if imp.HasField("served_at") else 0
    return ImpressionRecord(imp.recommendation_id, imp.user_id, imp.variant, imp.experiment,
                            served or fallback_ms, tuple(imp.item_ids), imp.degraded)


def event_record(ev: events_pb2.Event) -> EventRecord:
    """The attribution view of a valid event (value in millionths of the currency, purchases only)."""
    value = 0
    if ev.type == PURCHASE and ev.HasField("value") and math.isfinite(ev.value) and ev.value > 0:
        value = round(ev.value * 1_000_000)
    position = ev.position if ev.HasField("position") and ev.position >= 0 else -1
    at = ev.occurred_at
    return EventRecord(ev.event_id, ev.user_id, ev.item_id, ev.type, at.seconds * 1000 + at.nanos // 1_000_000,
                       ev.recommendation_id, position, value)


class AttributionProcessor:
    """Decodes a batch of both topics and writes it; invalid records are skipped (the events
    agent dead-letters bad events; a bad impression is counted and logged)."""

    def __init__(self, store: RedisAttributionStore, metrics: FeaturesMetrics) -> None:
        self._store = store
        self._metrics = metrics

    async def process(self, records: Sequence[Record]) -> int:
        """Write a batch; returns how many records were new (not redeliveries)."""
        m = self._metrics
        batch: list[ImpressionRecord | EventRecord] = []
        for rec in records:
            try:
                if rec.topic == topics.IMPRESSIONS:
                    for got in decode_impressions(rec.value, rec.headers, int(rec.timestamp * 1000)):
                        if isinstance(got, InvalidEvent):
                            self._skip_impression(rec, got)
                        else:
                            batch.append(got)
                else:
                    batch.append(event_record(decode_event(rec.value)))
            except InvalidEvent as exc:
                if rec.topic == topics.IMPRESSIONS:
                    self._skip_impression(rec, exc)
                else:
                    m.attribution_skipped.labels(rec.topic, exc.reason).inc()
            except Exception:  # a decoder bug: the events agent dead-letters it; here it is skipped
                logger.error("decoding failed on %s/%s/%s", rec.topic, rec.partition, rec.offset, exc_info=True)
                m.attribution_skipped.labels(rec.topic, "undecodable").inc()
        if not batch:
            return 0
        await self._price(batch)
        applied = await _retrying("attribution batch", lambda: self._store.write(batch), m)
        self._export(applied)
        return sum(applied.new)

    def _skip_impression(self, rec: Record, exc: InvalidEvent) -> None:
        self._metrics.attribution_skipped.labels(rec.topic, exc.reason).inc()
        logger.info("skipping impression", extra={"reason": exc.reason, "error": exc.message,
                                                  "source": source_of(rec)})

    async def _price(self, batch: list[ImpressionRecord | EventRecord]) -> None:
        """Purchases without a value are worth the item's catalog price (0 when it has none)."""
        unpriced = [i for i, r in enumerate(batch)
                    if isinstance(r, EventRecord) and r.type_code == PURCHASE and not r.value_micros]
        if not unpriced:
            return
        prices = await _retrying("catalog prices", lambda: self._store.prices_micros(
            [batch[i].item_id for i in unpriced]), self._metrics)
        for i in unpriced:
            r = batch[i]
            price = prices.get(r.item_id, 0)
            if price:
                batch[i] = EventRecord(r.event_id, r.user_id, r.item_id, r.type_code, r.occurred_ms,
                                       r.recommendation_id, r.position, price)
            else:
                self._metrics.attribution_unpriced.inc()

    def _export(self, applied) -> None:
        m = self._metrics
        counters = {"impressions": m.attribution_impressions, "clicks": m.attribution_clicks,
                    "add_to_carts": m.attribution_add_to_carts, "purchases": m.attribution_purchases}
        for experiment, variant, name, n in applied.increments:
            if name in counters:
                counters[name].labels(experiment, variant).inc(n)
            elif name == "revenue_micros":
                m.attribution_revenue.labels(experiment, variant).inc(n / 1_000_000)
        for reason_type, n in applied.unattributed:
            reason, _, kind = reason_type.rpartition(":")
            if kind in TYPE_NAMES.values():
                if n > 0:
                    m.attribution_unattributed.labels(reason, kind).inc(n)
                else:  # a list that came after the event that named it: attributed late
                    m.attribution_late.labels(kind).inc(-n)


def now_ms() -> int:
    return int(time.time() * 1000)
