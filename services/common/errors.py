"""Domain errors that know their gRPC status; one interceptor maps them (see grpc_server)."""
from __future__ import annotations

import grpc


class DomainError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(DomainError):
    """A bounded queue is full: the caller should back off or fall back (e.g. trending)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
