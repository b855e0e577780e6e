"""The topics the worker reads and writes, as raw bytes (decoding is ours, see contract.validation)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import faust

from services.contract import topics
from services.features.processing import Record, source_of


class RawBytesSchema(faust.Schema):
    """Keys and values as the bytes on the wire (faust's "raw" codec) for every record.

    Reading them is identity: this skips faust's per-record serializer registry
    lookups and codec calls on the way in (~8 % of the worker's event loop in a
    profile). Sending still goes through the "raw" serializers.
    """

    def loads_key(self, app, message, *, loads=None, serializer=None):
        return message.key

    def loads_value(self, app, message, *, loads=None, serializer=None):
        return message.value


def _raw() -> dict:
    return {"schema": RawBytesSchema(key_type=bytes, value_type=bytes, key_serializer="raw",
                                     value_serializer="raw")}


@dataclass(frozen=True)
class FeatureTopics:
    events: faust.TopicT
    catalog: faust.TopicT
    dead_letter: faust.TopicT


def define_topics(app: faust.App) -> FeatureTopics:
    return FeatureTopics(
        events=app.topic(topics.EVENTS, **_raw()),
        catalog=app.topic(topics.CATALOG, **_raw()),
        dead_letter=app.topic(topics.EVENTS_DEAD_LETTER, **_raw()),
    )


class TopicDeadLetters:
    """DeadLetterSink on a faust topic: original key and bytes, reason and source in headers."""

    def __init__(self, topic: faust.TopicT) -> None:
        self._topic = topic
        self._pending: list = []

    async def send(self, record: Record, reason: str) -> None:
        # force=True: send now instead of attaching to the current event, which
        # faust would only publish once the whole batch is acked.
        fut = await self._topic.send(
            key=record.key,
            value=record.value,
            headers=[
                (topics.DLQ_REASON_HEADER, reason.encode()),
                (topics.DLQ_SOURCE_HEADER, source_of(record).encode()),
            ],
            force=True,
        )
        self._pending.append(fut)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
