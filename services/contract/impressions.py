"""The records of the impressions topic (``shopstream.impressions.v1``), written and read.

A record holds either one served list, an ``Impression`` (keyed by user id: the contract's
``EventProducer.send_impressions``, and any producer written before batches), or many, an
``ImpressionBatch``, marked by the header ``shopstream-message:
shopstream.events.v1.ImpressionBatch``. The gateway publishes batches: one record per
partition per publish, holding only lists of users whose key maps to that partition (the
producer's murmur2 partitioner, as for the events), so the topic stays co-partitioned with
the events. Either may be protobuf binary or, starting with ``{``, its JSON mapping.

Why batches: a consumer pays a fixed cost per Kafka record (faust's per-message path, fetch
and commit bookkeeping) that was most of what attributing one list cost the features worker
(``python -m bench.attribution_worker``; docs/experiments.md, "Cost").
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from google.protobuf import json_format
from shopstream.events.v1 import events_pb2

from services.contract.validation import InvalidEvent

MESSAGE_HEADER = "shopstream-message"
BATCH = events_pb2.ImpressionBatch.DESCRIPTOR.full_name.encode()
BATCH_HEADERS = ((MESSAGE_HEADER, BATCH),)
# The most bytes of impressions in one batch record (a list larger than this goes alone): well
# below the broker's default message.max.bytes (1 MiB) and the gateway producer's batch size.
MAX_RECORD_BYTES = 128 * 1024

Headers = Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None


def batch_values(impressions: Sequence[events_pb2.Impression]) -> Iterator[bytes]:
    """``impressions`` as serialized ``ImpressionBatch`` values, in order, each at most
    ``MAX_RECORD_BYTES`` of impressions (unless one impression alone is larger)."""
    batch, size = events_pb2.ImpressionBatch(), 0
    for imp in impressions:
        n = imp.ByteSize()
        if size and size + n > MAX_RECORD_BYTES:
            yield batch.SerializeToString()
            batch, size = events_pb2.ImpressionBatch(), 0
        batch.impressions.append(imp)
        size += n
    if size or batch.impressions:
        yield batch.SerializeToString()


def is_batch(headers: Headers) -> bool:
    """Whether a record's headers mark it as an ``ImpressionBatch``."""
    if not headers:
        return False
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return any(name == MESSAGE_HEADER and value == BATCH for name, value in pairs)


def decode(value: bytes | None, headers: Headers = None) -> list[events_pb2.Impression]:
    """The served lists of one record, not validated (``validation.validate_impression``, or the
    consumer's own checks, do that one by one); InvalidEvent when the record is not one."""
    if value is None:
        raise InvalidEvent("null_value", "tombstone")
    batch = is_batch(headers)
    message = events_pb2.ImpressionBatch() if batch else events_pb2.Impression()
    try:
        if value[:1] == b"{":
            json_format.Parse(value.decode("utf-8"), message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(value)
    except Exception as exc:  # any failure of either parser is a bad record, not a consumer error
        kind = "ImpressionBatch" if batch else "Impression"
        raise InvalidEvent("bad_encoding", f"not an {kind}: {type(exc).__name__}") from None
    return list(message.impressions) if batch else [message]
