"""Sequence-file, attributes and event-log readers."""
import json

import pytest

from services.ingest.datasets import (read_events_jsonl, read_item_attributes, read_sequences,
                                      write_sequences)


def test_sequences_round_trip(tmp_path):
    seqs = {"1": ["5", "3", "5"], "u2": ["x"]}
    write_sequences(tmp_path / "s.txt", seqs)
    assert (tmp_path / "s.txt").read_text() == "1 5 3 5\nu2 x\n"
    assert read_sequences(tmp_path / "s.txt") == seqs


def test_write_rejects_whitespace_ids(tmp_path):
    with pytest.raises(ValueError):
        write_sequences(tmp_path / "s.txt", {"u": ["a b"]})


def test_attributes_as_strings(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"4": [1, 2], "9": []}))
    assert read_item_attributes(tmp_path / "a.json") == {"4": ["1", "2"], "9": []}


def test_events_sorted_by_time_with_stable_ties_and_type_filter(tmp_path):
    events = [
        {"user_id": "u1", "item_id": "b", "occurred_at": "2024-01-01T10:00:02Z", "type": "view"},
        {"user_id": "u1", "item_id": "a", "occurred_at": "2024-01-01T11:00:00+01:00", "type": "view"},
        {"user_id": "u2", "item_id": 7, "occurred_at": "2024-01-01T00:00:00Z", "type": "purchase"},
        {"user_id": "u1", "item_id": "c", "occurred_at": "2024-01-01T10:00:02Z", "type": "purchase"},
    ]
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n\n")
    # 11:00+01:00 is 10:00Z, so "a" comes first; "b" and "c" tie and keep file order.
    assert read_events_jsonl(path) == {"u1": ["a", "b", "c"], "u2": ["7"]}
    assert read_events_jsonl(path, ["purchase"]) == {"u2": ["7"], "u1": ["c"]}


def test_bad_event_names_the_line(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"user_id": "u", "item_id": "i", "type": "view"}\n')
    with pytest.raises(ValueError, match="e.jsonl:1"):
        read_events_jsonl(path)
