"""The size limits of the contract, one value each, enforced by every service.

An id that ``TrackEvents`` accepts is one that ``Recommend``, ``SimilarItems``, the
ranker and the features worker accept too (tests/e2e/test_id_limits.py).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

from services.common.errors import InvalidArgument

MAX_ID_CHARS = 256  # user, item, event, session and attribute ids
MAX_TEXT_CHARS = 1024  # titles, categories, brands, page names
MAX_ATTRIBUTES = 256  # attributes per catalog item
MAX_EVENT_BYTES = 64 * 1024  # one encoded event or catalog record

# Request filters: what a storefront can mean, not what fits in a message (the ranker builds
# a mask per category and per excluded id on every call).
MAX_FILTER_CATEGORIES = 100  # include_categories, exclude_categories (each)
MAX_FILTER_ITEM_IDS = 1000  # exclude_item_ids (the gateway's own setting may allow fewer)

# An event's occurred_at: nothing before this (a zero-ish or negative clock), and no later
# than this far ahead of the receiver's clock (devices' clocks drift; years ahead is a bug).
MIN_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=timezone.utc)
MIN_OCCURRED_AT_S = int(MIN_OCCURRED_AT.timestamp())
MAX_FUTURE_SKEW_S = 3600.0

# An event's position in the served list it came from (Event.position, 0-based): a storefront
# may page far down a list, but not this far.
MAX_POSITION = 10_000


def check_id(field: str, value: str) -> str:
    """``value`` if it is a non-empty id within ``MAX_ID_CHARS``; else InvalidArgument naming ``field``."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(f"{field} must be at most {MAX_ID_CHARS} characters, got {len(value)}")
    return value


def check_list(field: str, values: Sequence[str], max_items: int, max_chars: int) -> Sequence[str]:
    """``values`` if there are at most ``max_items`` of them, none longer than ``max_chars``;
    else InvalidArgument naming ``field``."""
    if len(values) > max_items:
        raise InvalidArgument(f"{field} has {len(values)} entries, at most {max_items} allowed")
    for value in values:
        if len(value) > max_chars:
            raise InvalidArgument(f"{field} entries must be at most {max_chars} characters, got {len(value)}")
    return values


def check_filter(field: str, filters, max_item_ids: int = MAX_FILTER_ITEM_IDS) -> None:
    """The list fields of a request's filters (the gateway's RecommendFilters or the ranker's
    ItemFilter: both spell them the same) within the limits above; else InvalidArgument
    naming the field, e.g. ``filters.include_categories``."""
    check_list(f"{field}.include_categories", filters.include_categories, MAX_FILTER_CATEGORIES, MAX_TEXT_CHARS)
    check_list(f"{field}.exclude_categories", filters.exclude_categories, MAX_FILTER_CATEGORIES, MAX_TEXT_CHARS)
    check_list(f"{field}.exclude_item_ids", filters.exclude_item_ids, min(max_item_ids, MAX_FILTER_ITEM_IDS),
               MAX_ID_CHARS)
