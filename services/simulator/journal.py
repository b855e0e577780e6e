"""The simulator's own log (JSONL) and what it sums to: the oracle for attribution.

One JSON object per line, ``kind`` first:

- ``run``: the settings of the run (seed, shoppers, behaviour, drift).
- ``list``: one served list as the shopper saw it: ``recommendation_id``, ``variant``,
  ``experiment``, ``strategy``, ``model_version``, ``items``, ``click_probability`` (the
  ground truth for this shopper at that moment), ``drifted``, seconds since the start ``t``.
- ``event``: one event the gateway accepted (``TrackEvents`` answered OK): ``event_id``,
  ``user_id``, ``item_id``, ``type``, ``recommendation_id``, ``position``, ``variant``, ``value``.
- ``error``: a call that failed (``call``, ``code``); a failed ``TrackEvents`` logs its
  events here and not as ``event``, so the counts hold only what reached the log.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

EVENT_TYPES = ("click", "add_to_cart", "purchase")


class Journal:
    """Appends records to a JSONL file; ``None`` keeps them in memory only."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._file: TextIO | None = None
        self.records: list[dict[str, Any]] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> None:
        record = {"kind": kind, **fields}
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record, sort_keys=False) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_journal(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


@dataclass
class VariantTotals:
    """One variant's counts from the shoppers' side, and its ground-truth CTR."""

    impressions: int = 0  # served lists seen
    clicks: int = 0
    add_to_carts: int = 0
    purchases: int = 0
    revenue: float = 0.0
    users: int = 0
    expected_clicks: float = 0.0  # sum of the lists' click probabilities
    items_shown: int = 0

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def expected_ctr(self) -> float:
        """Ground truth: the mean click probability over the lists this variant served."""
        return self.expected_clicks / self.impressions if self.impressions else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ctr": self.ctr, "expected_ctr": self.expected_ctr}


@dataclass
class Summary:
    variants: dict[str, VariantTotals] = field(default_factory=dict)
    errors: int = 0
    lists: int = 0
    events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"lists": self.lists, "events": self.events, "errors": self.errors,
                "variants": {name: v.as_dict() for name, v in sorted(self.variants.items())}}


def summarize(records: Iterable[dict[str, Any]]) -> Summary:
    """Per-variant counts (impressions = served lists, events the gateway accepted by type,
    attributed to the list they name) and the ground-truth expected CTR."""
    out = Summary()
    users: dict[str, set[str]] = defaultdict(set)
    for r in records:
        kind = r.get("kind")
        if kind == "list":
            v = out.variants.setdefault(r["variant"], VariantTotals())
            v.impressions += 1
            v.items_shown += len(r["items"])
            v.expected_clicks += r["click_probability"]
            users[r["variant"]].add(r["user_id"])
            out.lists += 1
        elif kind == "event":
            v = out.variants.setdefault(r["variant"], VariantTotals())
            if r["type"] == "click":
                v.clicks += 1
            elif r["type"] == "add_to_cart":
                v.add_to_carts += 1
            elif r["type"] == "purchase":
                v.purchases += 1
                v.revenue += float(r.get("value") or 0.0)
            out.events += 1
        elif kind == "error":
            out.errors += 1
    for name, members in users.items():
        out.variants[name].users = len(members)
    return out


def ctr_over_time(records: Iterable[dict[str, Any]], bucket_s: float,
                  key: Callable[[dict[str, Any]], str] | None = None) -> dict[str, list[dict[str, float]]]:
    """Per series (default: the variant; ``key(list_record)`` chooses another grouping) and per
    ``bucket_s`` window of the run: lists, clicks, measured CTR and expected (true) CTR. A
    click counts in the bucket its list was served in."""
    key = key or (lambda r: r["variant"])
    buckets: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0.0]))
    click_series: dict[str, tuple[str, int]] = {}
    for r in records:
        if r.get("kind") == "list":
            b = int(r["t"] // bucket_s)
            name = key(r)
            row = buckets[name][b]
            row[0] += 1
            row[2] += r["click_probability"]
            click_series[r["recommendation_id"]] = (name, b)
        elif r.get("kind") == "event" and r["type"] == "click" and r.get("recommendation_id") in click_series:
            name, b = click_series[r["recommendation_id"]]
            buckets[name][b][1] += 1
    return {
        name: [{"t": b * bucket_s, "lists": n, "clicks": c, "ctr": c / n, "expected_ctr": e / n}
               for b, (n, c, e) in sorted(rows.items())]
        for name, rows in buckets.items()
    }
