"""Per-client API tokens and rate limits for a gRPC service (the gateway uses it).

A call carries ``authorization: Bearer <token>``. Tokens are configured as JSON (a file
or an environment variable, see ``parse_clients``): each names a client, the methods it
may call and its rate limits. Tokens are kept only as SHA-256 digests: a presented token
is hashed and its digest compared with every configured one by ``hmac.compare_digest``
(no early exit), so how long a check takes says nothing about any configured token.
Tokens are random secrets, not passwords, so an unsalted hash is what they need.

``TokenGuard`` is the ``CallGuard`` that ``grpc_server.ServerInterceptor`` consults:
methods of the protected services need a token; every other method (health, reflection)
stays open.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated, rate_limited
from services.common.ratelimit import TokenBucket

AUTHORIZATION_METADATA = "authorization"
ALL_METHODS = "*"


class TokenConfigError(ValueError):
    """The token configuration cannot be used; the message says where and why."""


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Rate:
    per_s: float
    burst: float


@dataclass(frozen=True)
class Client:
    """One API client: its (bounded, operator-chosen) name, what it may call, its rate limits."""

    name: str
    methods: frozenset[str]  # method names (``Recommend``), or ``*`` for all
    limits: Mapping[str, Rate] = field(default_factory=dict)  # limit name -> rate; absent = unlimited

    def may_call(self, method: str) -> bool:
        return ALL_METHODS in self.methods or method in self.methods


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise TokenConfigError(f"{where} must be a positive number, got {value!r}")
    return float(value)


def _client(doc: Any, where: str, methods: Iterable[str], limit_names: Iterable[str]) -> tuple[Client, list[bytes]]:
    if not isinstance(doc, dict):
        raise TokenConfigError(f"{where} must be an object")
    unknown = set(doc) - {"name", "tokens", "tokens_sha256", "methods", "limits"}
    if unknown:
        raise TokenConfigError(f"{where} has unknown keys {sorted(unknown)}")
    name = doc.get("name")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise TokenConfigError(f"{where}.name must be a non-empty string of at most 64 characters")
    digests: list[bytes] = []
    for token in doc.get("tokens", []):
        if not isinstance(token, str) or len(token) < 16:
            raise TokenConfigError(f"{where} ({name}): every token must be a string of at least 16 characters")
        digests.append(token_digest(token))
    for hexed in doc.get("tokens_sha256", []):
        try:
            digest = bytes.fromhex(hexed) if isinstance(hexed, str) else b""
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise TokenConfigError(f"{where} ({name}): tokens_sha256 entries must be 64 hex digits")
        digests.append(digest)
    if not digests:
        raise TokenConfigError(f"{where} ({name}) has no tokens (\"tokens\" or \"tokens_sha256\")")
    allowed = doc.get("methods")
    known = {*methods, ALL_METHODS}
    if not isinstance(allowed, list) or not allowed or not all(isinstance(m, str) and m in known for m in allowed):
        raise TokenConfigError(f"{where} ({name}).methods must be a non-empty list of {sorted(known)}")
    limits_doc = doc.get("limits", {})
    if not isinstance(limits_doc, dict) or not set(limits_doc) <= set(limit_names):
        raise TokenConfigError(f"{where} ({name}).limits may only name {sorted(limit_names)}")
    limits = {}
    for kind, rate in limits_doc.items():
        if not isinstance(rate, dict) or not set(rate) <= {"per_s", "burst"} or "per_s" not in rate:
            raise TokenConfigError(f'{where} ({name}).limits.{kind} must be {{"per_s": N, "burst": M}} (burst optional)')
        per_s = _number(rate["per_s"], f"{where} ({name}).limits.{kind}.per_s")
        burst = _number(rate.get("burst", per_s), f"{where} ({name}).limits.{kind}.burst")
        limits[kind] = Rate(per_s, max(burst, 1.0))
    return Client(name, frozenset(allowed), limits), digests


def parse_clients(text: str, source: str, methods: Iterable[str], limit_names: Iterable[str]) -> dict[bytes, Client]:
    """Token digest -> client, from JSON such as::

        {"clients": [{"name": "storefront",
                      "tokens_sha256": ["<hex sha256 of the token>"],   # or "tokens": ["<token>"]
                      "methods": ["Recommend", "SimilarItems", "TrackEvents"],   # or ["*"]
                      "limits": {"requests": {"per_s": 200, "burst": 400},
                                 "events": {"per_s": 1000}}}]}

    Several tokens per client let a token be rotated without downtime. ``source`` names the
    file or variable in error messages.
    """
    methods, limit_names = list(methods), list(limit_names)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise TokenConfigError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clients"), list) or not doc["clients"]:
        raise TokenConfigError(f'{source} must be a JSON object with a non-empty "clients" list')
    out: dict[bytes, Client] = {}
    names: set[str] = set()
    for i, entry in enumerate(doc["clients"]):
        client, digests = _client(entry, f"{source}: clients[{i}]", methods, limit_names)
        if client.name in names:
            raise TokenConfigError(f"{source}: client name {client.name!r} appears twice")
        names.add(client.name)
        for digest in digests:
            if digest in out:
                raise TokenConfigError(f"{source}: a token of {client.name!r} is also {out[digest].name!r}'s")
            out[digest] = client
    return out


@dataclass(frozen=True)
class MethodLimit:
    """Which of a client's limits a method spends, and how much one request costs."""

    limit: str
    cost: Callable[[Any], int] = lambda _request: 1


def _bearer(metadata) -> str | None:
    for key, value in metadata or ():
        if key == AUTHORIZATION_METADATA:
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class TokenGuard:
    """The ``CallGuard`` of the protected services: token -> client -> method allowed -> rate."""

    def __init__(self, clients: Mapping[bytes, Client], protected_services: Iterable[str],
                 method_limits: Mapping[str, MethodLimit], *,
                 on_limited: Callable[[str, str], None] = lambda client, method: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._entries = tuple(clients.items())
        self._protected = frozenset(protected_services)
        self._method_limits = dict(method_limits)
        self._on_limited = on_limited
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def for_method(self, method: str) -> "_MethodGuard | None":
        service, _, name = method.lstrip("/").rpartition("/")
        if service not in self._protected:
            return None
        return _MethodGuard(self, name, self._method_limits.get(name))

    def authenticate(self, method: str, metadata) -> Client:
        token = _bearer(metadata)
        if not token:
            raise Unauthenticated("missing credentials: send metadata 'authorization: Bearer <token>'")
        digest = token_digest(token)
        client = None
        for stored, candidate in self._entries:  # every entry, no early exit
            if hmac.compare_digest(digest, stored):
                client = candidate
        if client is None:
            raise Unauthenticated("unknown token")
        if not client.may_call(method):
            raise PermissionDenied(f"client {client.name!r} may not call {method}")
        return client

    def admit(self, client: Client, method: str, limit: MethodLimit | None, request) -> None:
        if limit is None:
            return
        rate = client.limits.get(limit.limit)
        if rate is None:
            return
        key = (client.name, limit.limit)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate.per_s, rate.burst, self._clock)
        cost = limit.cost(request)
        wait_s = bucket.try_take(cost)
        if wait_s == 0.0:
            return
        if math.isinf(wait_s):
            raise InvalidArgument(f"{method} costs {cost} {limit.limit}, more than client {client.name!r} may "
                                  f"send at once ({rate.burst:g}): split the request")
        self._on_limited(client.name, method)
        raise rate_limited(f"client {client.name!r} is over its limit of {rate.per_s:g} {limit.limit}/s", wait_s)


@dataclass(frozen=True)
class _MethodGuard:
    guard: TokenGuard
    method: str
    limit: MethodLimit | None

    def authenticate(self, metadata) -> Client:
        return self.guard.authenticate(self.method, metadata)

    def admit(self, principal: Client, request) -> None:
        self.guard.admit(principal, self.method, self.limit, request)
