"""What counts as a well-formed event or catalog record, and how raw bytes become one.

Both the gateway (before publishing) and the features worker (before applying)
go through these functions, so "valid" means the same thing at both ends.
Failures raise :class:`InvalidEvent` whose ``reason`` is a short code used as a
metric label and as the dead-letter header value (see docs/events.md).
"""
from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from shopstream.catalog.v1 import catalog_pb2
from shopstream.events.v1 import events_pb2

from services.common.errors import InvalidArgument
from services.contract.limits import (
    MAX_ATTRIBUTES, MAX_EVENT_BYTES, MAX_FUTURE_SKEW_S, MAX_ID_CHARS, MAX_POSITION, MAX_TEXT_CHARS, MIN_OCCURRED_AT_S,
)

_EVENT_TYPES = {v.number for v in events_pb2.EventType.DESCRIPTOR.values if v.number != 0}


class InvalidEvent(InvalidArgument):
    """A record that can never be applied; ``reason`` is a machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_len(value: str, limit: int, name: str) -> None:
    if len(value) > limit:
        raise InvalidEvent("field_too_long", f"{name} is {len(value)} characters, at most {limit} allowed")


def validate_event(ev: events_pb2.Event, *, now: float | None = None,
                   max_future_skew_s: float = MAX_FUTURE_SKEW_S) -> None:
    """Raise InvalidEvent unless ``ev`` has ids, a known type and a timestamp within limits:
    not before ``MIN_OCCURRED_AT``, at most ``max_future_skew_s`` ahead of ``now`` (the
    receiver's clock, ``time.time()`` by default)."""
    if not ev.event_id:
        raise InvalidEvent("missing_event_id", "event_id is required")
    if not ev.user_id:
        raise InvalidEvent("missing_user_id", "user_id is required")
    if not ev.item_id:
        raise InvalidEvent("missing_item_id", "item_id is required")
    if ev.type not in _EVENT_TYPES:
        raise InvalidEvent("unknown_type", f"type {ev.type} is not a known event type")
    if not ev.HasField("occurred_at") or (ev.occurred_at.seconds == 0 and ev.occurred_at.nanos == 0):
        raise InvalidEvent("missing_occurred_at", "occurred_at is required")
    _check_occurred_at(ev.occurred_at.seconds, time.time() if now is None else now, max_future_skew_s)
    for name in ("event_id", "user_id", "item_id", "session_id", "recommendation_id"):
        _check_len(getattr(ev, name), MAX_ID_CHARS, name)
    if ev.HasField("context"):
        _check_len(ev.context.page, MAX_TEXT_CHARS, "context.page")
    _check_attribution(ev)


def _check_attribution(ev: events_pb2.Event) -> None:
    """The closed loop's optional fields: the position in the served list and the revenue."""
    if ev.HasField("position") and not 0 <= ev.position <= MAX_POSITION:
        raise InvalidEvent("bad_position", f"position {ev.position} must be between 0 and {MAX_POSITION}")
    if ev.HasField("value") and not (math.isfinite(ev.value) and ev.value >= 0):
        raise InvalidEvent("bad_value", f"value {ev.value} must be finite and >= 0")


def validate_impression(imp: events_pb2.Impression) -> None:
    """Raise InvalidEvent unless ``imp`` has a recommendation id and ids within limits."""
    if not imp.recommendation_id:
        raise InvalidEvent("missing_recommendation_id", "recommendation_id is required")
    for name in ("recommendation_id", "user_id", "variant", "experiment", "model_version"):
        _check_len(getattr(imp, name), MAX_ID_CHARS, name)
    for item_id in imp.item_ids:
        _check_len(item_id, MAX_ID_CHARS, "item_ids[]")


def _iso(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:.0f} s since the epoch"


def _check_occurred_at(seconds: int, now: float, max_future_skew_s: float) -> None:
    if seconds < MIN_OCCURRED_AT_S:
        raise InvalidEvent("occurred_at_too_old",
                           f"occurred_at {_iso(seconds)} is before {_iso(MIN_OCCURRED_AT_S)}")
    if seconds > now + max_future_skew_s:
        raise InvalidEvent("occurred_at_in_future",
                           f"occurred_at {_iso(seconds)} is more than {max_future_skew_s:g} s ahead of "
                           f"the receiver's clock ({_iso(now)})")


def validate_catalog_item(item: catalog_pb2.CatalogItem) -> None:
    """Raise InvalidEvent unless ``item`` has an id, a finite non-negative price and sane sizes."""
    if not item.item_id:
        raise InvalidEvent("missing_item_id", "item_id is required")
    _check_len(item.item_id, MAX_ID_CHARS, "item_id")
    for name in ("title", "category", "brand"):
        _check_len(getattr(item, name), MAX_TEXT_CHARS, name)
    if not math.isfinite(item.price) or item.price < 0:
        raise InvalidEvent("bad_price", f"price {item.price} must be finite and >= 0")
    if len(item.attributes) > MAX_ATTRIBUTES:
        raise InvalidEvent("field_too_long", f"{len(item.attributes)} attributes, at most {MAX_ATTRIBUTES} allowed")
    for attr in item.attributes:
        _check_len(attr, MAX_ID_CHARS, "attributes[]")


def _enum_name(value: Any, prefix: str, reason: str, field: str) -> Any:
    """Map hand-typed short names ("view", "add-to-cart") onto the proto enum names."""
    if not isinstance(value, str):
        return value
    name = value.strip().upper().replace("-", "_").replace(" ", "_")
    if not name.startswith(prefix):
        name = prefix + name
    enum = events_pb2.EventType if prefix == "EVENT_TYPE_" else events_pb2.Device
    if name not in enum.keys():
        raise InvalidEvent(reason, f"{field} {value!r} is not one of {', '.join(enum.keys()[1:])}")
    return name


def _parse_json(raw: bytes) -> dict:
    """Strict JSON: no NaN/Infinity, no number that overflows a double, no key twice (which of
    two values counts differs between parsers); nesting deep enough to exhaust the parser's
    recursion is ``bad_json`` like any other malformed payload."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("bad_encoding", f"JSON payload is not UTF-8: {exc.reason}") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                         object_pairs_hook=_unique_keys)
    except InvalidEvent:
        raise
    except RecursionError:
        raise InvalidEvent("bad_json", "payload is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers past int_max_str_digits
        raise InvalidEvent("bad_json", f"payload is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidEvent("bad_json", "payload must be a JSON object")
    return doc


def _reject_constant(name: str) -> Any:
    raise InvalidEvent("bad_json", f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidEvent("bad_json", f"number {text[:40]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise InvalidEvent("bad_json", f"key {twice[:80]!r} appears more than once")
    return doc


_JSON_KINDS = {  # proto3 JSON mapping: the JSON values a field of each type takes (null: the default)
    FieldDescriptor.TYPE_STRING: ((str,), "a string"),
    FieldDescriptor.TYPE_BYTES: ((str,), "a base64 string"),
    FieldDescriptor.TYPE_BOOL: ((bool,), "a boolean"),
    FieldDescriptor.TYPE_ENUM: ((str, int), "an enum name or an integer"),
    FieldDescriptor.TYPE_DOUBLE: ((int, float, str), "a number"),
    FieldDescriptor.TYPE_FLOAT: ((int, float, str), "a number"),
}
_JSON_INTEGER = ((int, str), "an integer")  # every integer type; a string for 64-bit ones
_JSON_STRING_MESSAGES = {"google.protobuf.Timestamp", "google.protobuf.Duration"}


def _check_json_types(doc: dict, descriptor, path: str = "") -> None:
    """Each known field's JSON value is of a kind its proto type takes: ``"type": true`` or
    ``"context": "mobile"`` is ``bad_json``, not an event with a default put in its place.
    Unknown fields are ignored, as the parser ignores them."""
    for key, value in doc.items():
        field = descriptor.fields_by_name.get(key) or descriptor.fields_by_camelcase_name.get(key)
        if field is None or value is None:
            continue
        name = path + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if not isinstance(value, dict):
                raise InvalidEvent("bad_json", f"{name} must be an object, not {_json_kind(value)}")
        elif field.is_repeated:
            if not isinstance(value, list):
                raise InvalidEvent("bad_json", f"{name} must be a JSON array, not {_json_kind(value)}")
            for element in value:
                _check_json_value(field, element, f"{name}[]")
        else:
            _check_json_value(field, value, name)


def _check_json_value(field, value: Any, name: str) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.full_name in _JSON_STRING_MESSAGES:
            kinds, expected = (str,), "a string"
        elif isinstance(value, dict):
            _check_json_types(value, field.message_type, name + ".")
            return
        else:
            kinds, expected = (dict,), "an object"
    else:
        kinds, expected = _JSON_KINDS.get(field.type, _JSON_INTEGER)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise InvalidEvent("bad_json", f"{name} must be {expected}, not {_json_kind(value)}")


def _json_kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a fractional number", str: "a string",
            dict: "an object", list: "an array"}.get(type(value), type(value).__name__)


def _json_to(doc: dict, message: Message) -> None:
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        raise InvalidEvent("bad_json", f"payload does not match {message.DESCRIPTOR.full_name}: {exc}") from None


def _check_size(raw: bytes) -> None:
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("oversized", f"payload is {len(raw)} bytes, at most {MAX_EVENT_BYTES} allowed")


def _is_json(raw: bytes) -> bool:
    return raw.lstrip()[:1] == b"{"


def decode_event(raw: bytes | None, *, now: float | None = None, max_future_skew_s: float = MAX_FUTURE_SKEW_S) -> events_pb2.Event:
    """Decode protobuf binary, or proto3 JSON when the payload starts with ``{``, then validate.

    JSON accepts both field spellings (``user_id``/``userId``) and short enum
    names (``"type": "view"``, ``"device": "mobile"``) for hand-typed records.
    """
    ev = _decode(raw, events_pb2.Event(), _normalise_event_enums)
    validate_event(ev, now=now, max_future_skew_s=max_future_skew_s)
    return ev


def _normalise_event_enums(doc: dict) -> None:
    """Short enum names ("view", "mobile") as hand-typed JSON uses them."""
    if "type" in doc:
        doc["type"] = _enum_name(doc["type"], "EVENT_TYPE_", "unknown_type", "type")
    ctx = doc.get("context")
    if isinstance(ctx, dict) and "device" in ctx:
        ctx["device"] = _enum_name(ctx["device"], "DEVICE_", "bad_json", "context.device")


def _decode(raw: bytes | None, message: Message, normalise_json=None) -> Message:
    """Protobuf binary, or the proto3 JSON mapping when the payload starts with ``{``.

    Whatever ``raw`` is (a tombstone's None, garbage, a huge or deeply nested payload), the
    result is the message or an InvalidEvent with a reason: never another exception.
    """
    if raw is None:
        raise InvalidEvent("null_value", "the record has no value (a tombstone)")
    if not isinstance(raw, bytes):
        if not isinstance(raw, (bytearray, memoryview)):
            raise InvalidEvent("bad_encoding", f"payload is {type(raw).__name__}, not bytes")
        raw = bytes(raw)
    _check_size(raw)
    if _is_json(raw):
        doc = _parse_json(raw)
        _check_json_types(doc, message.DESCRIPTOR)
        if normalise_json is not None:
            normalise_json(doc)
        _json_to(doc, message)
    else:
        try:
            message.ParseFromString(raw)
        except (DecodeError, RecursionError) as exc:
            raise InvalidEvent("bad_encoding", f"payload is neither protobuf nor JSON: {exc}") from None
    return message


def decode_catalog_item(raw: bytes | None) -> catalog_pb2.CatalogItem:
    """Like :func:`decode_event`, for catalog records."""
    item = _decode(raw, catalog_pb2.CatalogItem())
    validate_catalog_item(item)
    return item
