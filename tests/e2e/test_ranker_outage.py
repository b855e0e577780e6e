"""With the ranker down the gateway still answers in time, degraded; then recovers."""
from __future__ import annotations

import uuid

import pytest

from shopstream.gateway.v1 import gateway_pb2

from support.helpers import event, recommend, wait_for

pytestmark = pytest.mark.e2e


def test_ranker_outage_degrades_then_recovers(system, producer, catalog_items):
    user = f"outage-{uuid.uuid4().hex[:8]}"
    producer.send_events([event(user, catalog_items[i], "CLICK") for i in range(3)], wait=True)
    wait_for(lambda: recommend(system.gateway, user).strategy == gateway_pb2.STRATEGY_PERSONALIZED, timeout=5.0)

    system.stack.stop_service("ranker")
    try:
        # The storefront's deadline: a reply at all means it came in time (gRPC fails the call
        # with DEADLINE_EXCEEDED otherwise), so no stopwatch of our own.
        resp = recommend(system.gateway, user, k=10, timeout=1.0)
        assert resp.degraded
        assert resp.degraded_reason
        assert resp.strategy == gateway_pb2.STRATEGY_TRENDING
        assert len(resp.items) == 10
    finally:
        system.stack.start_service("ranker")

    back = wait_for(lambda: (r := recommend(system.gateway, user)).strategy == gateway_pb2.STRATEGY_PERSONALIZED and r,
                    timeout=10.0)
    assert not back.degraded
