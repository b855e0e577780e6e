"""Who may call the gateway and how often: its methods, its rate limits, and the guard
``server.create_server`` installs (services/common/auth.py does the work).

- ``requests``: Recommend and SimilarItems calls per second (each costs 1);
- ``events``: events per second sent with TrackEvents (a call costs its number of events).

Health and reflection are not GatewayService methods, so they stay open.
"""
from __future__ import annotations

from shopstream.gateway.v1 import gateway_pb2

from services.common.auth import MethodLimit, TokenGuard
from services.gateway.metrics import GatewayMetrics

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]
METHODS = tuple(method.name for method in SERVICE.methods)
REQUESTS, EVENTS = "requests", "events"
LIMITS = (REQUESTS, EVENTS)
METHOD_LIMITS = {
    "Recommend": MethodLimit(REQUESTS),
    "SimilarItems": MethodLimit(REQUESTS),
    "TrackEvents": MethodLimit(EVENTS, lambda request: len(request.events)),
}


def make_guard(clients, metrics: GatewayMetrics) -> TokenGuard | None:
    """The guard of the gateway's methods over ``clients`` (``settings.api_clients()``); None
    when auth is disabled (``clients`` is None)."""
    if clients is None:
        return None
    return TokenGuard(clients, [SERVICE.full_name], METHOD_LIMITS,
                      on_limited=lambda client, method: metrics.rate_limited.labels(client, method).inc())
