"""What ``GatewayServicer`` asks of a gRPC ``ServicerContext``, for a call that came over HTTP.

The servicer's methods take ``(request, context)``; the HTTP API (http_api.py) calls the
same methods with an ``HttpContext`` instead of a gRPC one, so both transports run the
same rules. The deadline comes from a ``grpc-timeout`` header (gRPC's own format, e.g.
``150m``) or ``X-Request-Timeout`` (seconds, e.g. ``0.15``); without either, a call has
no deadline, as a gRPC call without one.
"""
from __future__ import annotations

import math
import time
from typing import Mapping, Sequence

import grpc

from services.common.errors import DomainError, InvalidArgument

GRPC_TIMEOUT_HEADER = "grpc-timeout"
TIMEOUT_HEADER = "x-request-timeout"
# gRPC's timeout units (the "Timeout" of its HTTP/2 protocol spec), in seconds.
_GRPC_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# Headers that are not call metadata (hop-by-hop, or about the HTTP body).
_NOT_METADATA = frozenset({"connection", "content-length", "content-type", "host", "keep-alive",
                           "transfer-encoding", "accept-encoding", "user-agent"})


class Aborted(DomainError):
    """``context.abort`` over HTTP: ends the call with ``code`` (the HTTP API maps it)."""

    def __init__(self, code: grpc.StatusCode, message: str, trailing_metadata: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message, trailing_metadata)
        self.code = code


def timeout_from_headers(headers: Mapping[str, str]) -> float | None:
    """The call's timeout in seconds from its headers, None when it names none; a malformed
    or non-positive value is INVALID_ARGUMENT."""
    raw = headers.get(GRPC_TIMEOUT_HEADER)
    if raw is not None:
        digits, unit = raw[:-1], raw[-1:]
        # gRPC allows at most 8 digits and one unit letter.
        if not (digits.isdigit() and len(digits) <= 8 and unit in _GRPC_UNITS and int(digits) > 0):
            raise InvalidArgument(f"{GRPC_TIMEOUT_HEADER} must be 1-8 digits and a unit (H, M, S, m, u, n), "
                                  f"e.g. 150m; got {raw!r}")
        return int(digits) * _GRPC_UNITS[unit]
    raw = headers.get(TIMEOUT_HEADER)
    if raw is not None:
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise InvalidArgument(f"{TIMEOUT_HEADER} must be a positive number of seconds, got {raw!r}")
        return seconds
    return None


def metadata_from_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The request's headers as gRPC invocation metadata (lower-case keys), e.g. ``authorization``."""
    return tuple((key.lower(), value) for key, value in headers.items() if key.lower() not in _NOT_METADATA)


class HttpContext:
    """The part of ``grpc.aio.ServicerContext`` the gateway's servicer and guard use."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], timeout_s: float | None, peer: str = "") -> None:
        self._metadata = metadata
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._peer = peer
        self._trailing: tuple[tuple[str, str], ...] = ()
        self._code: grpc.StatusCode | None = None
        self._details = ""

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], peer: str = "") -> HttpContext:
        return cls(metadata_from_headers(headers), timeout_from_headers(headers), peer)

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str]]) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str:
        return self._details

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()) -> None:
        raise Aborted(code, details, tuple(trailing_metadata) or self._trailing)
