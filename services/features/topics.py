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


# Headers of a dead letter whose key or value was cut to fit the producer's request size
# (beside the contract's reason and source headers): the original length in bytes, decimal.
DLQ_MAX_KEY_BYTES = 1024  # a key is a user id: 256 characters, at most 4 bytes each
_DLQ_OVERHEAD_BYTES = 4096  # headers and the record batch's framing, with room to spare


class TopicDeadLetters:
    """DeadLetterSink on a faust topic: original key and bytes, reason and source in headers.

    A record too large to produce (a value past the producer's ``max_request_size``, which
    the broker took from a producer with a larger one) goes there cut to fit, with its
    original size in a header, instead of failing the send, and with it the whole batch,
    on every retry.
    """

    def __init__(self, topic: faust.TopicT, max_request_size: int | None = None) -> None:
        self._topic = topic
        limit = max_request_size or topic.app.conf.producer_max_request_size
        self._max_value = max(limit - DLQ_MAX_KEY_BYTES - _DLQ_OVERHEAD_BYTES, 0)
        self._pending: list = []

    def letter(self, record: Record, reason: str) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
        """(key, value, headers) of the dead letter for ``record``."""
        key, value = record.key, record.value
        headers = [
            (topics.DLQ_REASON_HEADER, reason.encode()),
            (topics.DLQ_SOURCE_HEADER, source_of(record).encode()),
        ]
        if key is not None and len(key) > DLQ_MAX_KEY_BYTES:
            headers.append((topics.DLQ_KEY_BYTES_HEADER, str(len(key)).encode()))
            key = bytes(key[:DLQ_MAX_KEY_BYTES])
        if value is not None and len(value) > self._max_value:
            headers.append((topics.DLQ_VALUE_BYTES_HEADER, str(len(value)).encode()))
            value = bytes(value[:self._max_value])
        return key, value, headers

    async def send(self, record: Record, reason: str) -> None:
        key, value, headers = self.letter(record, reason)
        # force=True: send now instead of attaching to the current event, which
        # faust would only publish once the whole batch is acked.
        fut = await self._topic.send(key=key, value=value, headers=headers, force=True)
        self._pending.append(fut)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
