"""The whole loop: Kafka → features → Redis → ranker → gateway, every part real."""
from __future__ import annotations

import math
import time
import uuid

import grpc
import pytest
import redis

from shopstream.gateway.v1 import gateway_pb2

from services.common.stores import keys
from support.helpers import event, recommend, wait_for

pytestmark = pytest.mark.e2e


def test_new_user_trending_then_personalized_within_a_second(system, producer, catalog_items):
    user = f"new-{uuid.uuid4().hex[:8]}"
    before = recommend(system.gateway, user, k=10)
    assert before.strategy == gateway_pb2.STRATEGY_TRENDING
    assert not before.degraded
    assert len(before.items) == 10

    bought = catalog_items[3]
    events = [event(user, catalog_items[1], "VIEW"), event(user, catalog_items[2], "CLICK"),
              event(user, bought, "PURCHASE")]
    producer.send_events(events, wait=True)
    published = time.monotonic()

    after = wait_for(
        lambda: (r := recommend(system.gateway, user, k=10)).strategy == gateway_pb2.STRATEGY_PERSONALIZED and r,
        timeout=5.0,
    )
    elapsed = time.monotonic() - published
    assert elapsed < 1.0, f"personalized after {elapsed:.3f}s"
    assert not after.degraded
    assert after.model_version == system.model_version
    assert len(after.items) == 10
    served = [it.item_id for it in after.items]
    assert served != [it.item_id for it in before.items]
    assert bought not in served


def test_trending_reflects_popular_items(system, producer, catalog_items):
    """Many users buying one item make it trend for a brand-new user: enough of them to pass
    what earlier tests of the session made trend (one purchase's weight measured first)."""
    trending = redis.Redis.from_url(system.redis)
    hot = catalog_items[-1]
    before = trending.zscore(keys.TRENDING, hot) or 0.0
    producer.send_events([event(f"fan-0-{uuid.uuid4().hex[:6]}", hot, "PURCHASE")], wait=True)
    one = wait_for(lambda: (trending.zscore(keys.TRENDING, hot) or 0.0) - before, timeout=5.0,
                   what="one purchase counted in trending")
    top = trending.zrevrange(keys.TRENDING, 0, 0, withscores=True)[0][1]
    fans = min(5_000, math.ceil((top - before) / one) + 10)
    producer.send_events([event(f"fan-{i}-{uuid.uuid4().hex[:6]}", hot, "PURCHASE") for i in range(fans)], wait=True)
    wait_for(lambda: hot in [it.item_id for it in recommend(system.gateway, f"nobody-{uuid.uuid4().hex}", k=5).items],
             timeout=10.0, what=f"{hot} trending after {fans + 1} purchases")


def test_bad_requests_get_invalid_argument(system):
    with pytest.raises(grpc.RpcError) as err:
        recommend(system.gateway, "", k=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        recommend(system.gateway, "someone", k=100000)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
