"""Readers and writers for interaction data: the sequence-file format and exported event logs.

Sequence file: one user per line, ``user_id item_id item_id ...`` separated by
whitespace, items in time order (the Amazon "Beauty.txt" layout). Ids are kept as
strings everywhere so that numeric and opaque ids behave the same.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

Sequences = dict[str, list[str]]


def read_sequences(path: str | os.PathLike[str]) -> Sequences:
    """Read a sequence file into ``{user_id: [item_id, ...]}``, order kept.

    Blank lines are skipped; a user listed twice has the second line appended.
    """
    sequences: Sequences = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            sequences.setdefault(parts[0], []).extend(parts[1:])
    return sequences


def write_sequences(path: str | os.PathLike[str], sequences: Mapping[str, Iterable[str]]) -> None:
    """Write ``{user_id: [item_id, ...]}`` in the sequence-file format (atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for user, items in sequences.items():
            items = [str(i) for i in items]
            for token in (str(user), *items):
                if not token or any(c.isspace() for c in token):
                    raise ValueError(f"id {token!r} is empty or contains whitespace")
            f.write(" ".join((str(user), *items)) + "\n")
    os.replace(tmp, path)


def read_item_attributes(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read ``{"item_id": [attr_id, ...]}`` JSON, with all ids as strings."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    return {str(item): [str(a) for a in attrs] for item, attrs in raw.items()}


def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC3339 timestamp (``Z`` or offset); naive values are taken as UTC."""
    ts = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


def read_events_jsonl(
    path: str | os.PathLike[str], event_types: Iterable[str] | None = None
) -> Sequences:
    """Turn an exported JSONL event log into per-user item sequences sorted by time.

    Each line is a JSON object with at least ``user_id``, ``item_id``,
    ``occurred_at`` (RFC3339) and ``type``. ``event_types`` keeps only those types
    (all types when None). Events with equal timestamps keep their file order
    (the sort is stable), so a log already in order stays in order.
    """
    wanted = None if event_types is None else set(event_types)
    timed: dict[str, list[tuple[datetime, str]]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                if wanted is not None and event["type"] not in wanted:
                    continue
                key = (parse_rfc3339(event["occurred_at"]), str(event["item_id"]))
                timed.setdefault(str(event["user_id"]), []).append(key)
            except (KeyError, ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: bad event: {exc}") from exc
    return {
        user: [item for _, item in sorted(events, key=lambda e: e[0])]
        for user, events in timed.items()
    }
