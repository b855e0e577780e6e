"""The size limits of the contract, one value each, enforced by every service.

An id that ``TrackEvents`` accepts is one that ``Recommend``, ``SimilarItems``, the
ranker and the features worker accept too (tests/e2e/test_id_limits.py).
"""
from __future__ import annotations

from services.common.errors import InvalidArgument

MAX_ID_CHARS = 256  # user, item, event, session and attribute ids
MAX_TEXT_CHARS = 1024  # titles, categories, brands, page names
MAX_ATTRIBUTES = 256  # attributes per catalog item
MAX_EVENT_BYTES = 64 * 1024  # one encoded event or catalog record


def check_id(field: str, value: str) -> str:
    """``value`` if it is a non-empty id within ``MAX_ID_CHARS``; else InvalidArgument naming ``field``."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(f"{field} must be at most {MAX_ID_CHARS} characters, got {len(value)}")
    return value
