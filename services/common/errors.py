"""Domain errors that know their gRPC status; one interceptor maps them (see grpc_server)."""
from __future__ import annotations

from typing import Sequence

import grpc


class DomainError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, trailing_metadata: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.message = message
        # Sent with the status (e.g. ``retry-after-ms``); the interceptor sets it before aborting.
        self.trailing_metadata = tuple(trailing_metadata)


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


class FailedPrecondition(DomainError):
    """The request is valid but the system is not in the state it needs (e.g. it names a model
    version that is not loaded); retrying the same call will not help until that state changes."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(DomainError):
    """The caller's deadline ran out before the answer was ready (not a store outage)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(DomainError):
    """No credentials, or credentials nobody issued."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DomainError):
    """Known credentials that do not allow this method."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(DomainError):
    """A bounded queue is full, or a rate limit is spent: the caller should back off or fall back
    (e.g. trending)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


RETRY_AFTER_METADATA = "retry-after-ms"


def rate_limited(message: str, retry_after_s: float) -> ResourceExhausted:
    """RESOURCE_EXHAUSTED with the wait in the message and as trailing ``retry-after-ms``."""
    retry_ms = max(1, int(retry_after_s * 1000 + 0.999))
    return ResourceExhausted(f"{message}; retry after {retry_ms} ms",
                             trailing_metadata=((RETRY_AFTER_METADATA, str(retry_ms)),))
