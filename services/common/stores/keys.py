"""The Redis key schema (v1). The written spec is docs/redis-keys.md; keep both in step.

Per-user keys share the hash tag ``{u:<user_id>}`` so that one user's keys sit
in one Redis Cluster slot: the idempotent apply script touches them atomically.
"""
from __future__ import annotations

PREFIX = "ss:v1"


def _user(user_id: str, suffix: str) -> bytes:
    return f"{PREFIX}:{{u:{user_id}}}:{suffix}".encode()


def history(user_id: str) -> bytes:
    return _user(user_id, "hist")


def purchased(user_id: str) -> bytes:
    return _user(user_id, "purchased")


def counters(user_id: str) -> bytes:
    return _user(user_id, "counts")


def dedup(user_id: str) -> bytes:
    return _user(user_id, "dedup")


def embedding(user_id: str) -> bytes:
    return _user(user_id, "emb")


def attribution(user_id: str, suffix: str) -> bytes:
    """The attribution job's per-user join state (services/features/attribution_store.py)."""
    return _user(user_id, f"attr:{suffix}")


# What ForgetUser deletes of the attribution state: the lists served and the events waiting
# for them. The outbox and its sequence hold only counts on their way to the per-variant
# aggregates and stay, so that exactly-once still holds for what was already counted.
ATTRIBUTION_PERSONAL = ("lists", "recent", "seen", "pending")


def forgotten(user_id: str) -> bytes:
    """ForgetUser's tombstone: when (ms) the user was forgotten; events that occurred before
    it are never applied again (docs/privacy.md)."""
    return _user(user_id, "forgotten")


# Named filter expressions: hash name -> expression text (services/rules/registry.py).
FILTER_EXPRESSIONS = f"{PREFIX}:{{rules}}:filters".encode()
# Every forgotten user -> forget time (ms), for exports and retraining; its own slot.
FORGOTTEN_USERS = f"{PREFIX}:{{privacy}}:forgotten".encode()


TRENDING = f"{PREFIX}:trending".encode()
TRENDING_DECAY_LOCK = f"{PREFIX}:trending:decay-lock".encode()
CATALOG_ITEMS = f"{PREFIX}:{{catalog}}:items".encode()
CATALOG_VERSION = f"{PREFIX}:{{catalog}}:version".encode()
# Recovery marks: one hash, field "<topic>:<partition>" -> offset; its own slot (see docs).
RECOVERY_MARKS = f"{PREFIX}:{{recovery}}:marks".encode()
