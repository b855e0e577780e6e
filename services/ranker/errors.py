"""Ranker-specific domain errors (each knows its gRPC status; the shared interceptor maps them)."""
from __future__ import annotations

import grpc

from services.common.errors import DomainError


class ResourceExhausted(DomainError):
    """The scoring queue is full: the caller should back off or fall back (e.g. trending)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
