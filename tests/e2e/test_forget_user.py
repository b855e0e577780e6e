"""ForgetUser across the running system: the user's state is gone, the answer is a new
visitor's, redelivered events do not bring the profile back (the features worker honours the
tombstone), and an export of the log leaves the user's old events out."""
from __future__ import annotations

import uuid

import grpc
import pytest
import redis
import redis.asyncio
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.stores import keys
from services.common.stores.user_state import read_forgotten
from services.ingest.export import export_events
from support.helpers import event, recommend, wait_for

pytestmark = pytest.mark.e2e


def history(client: redis.Redis, user: str) -> list[bytes]:
    return client.lrange(keys.history(user), 0, -1)


async def test_forget_user_end_to_end(system, producer, catalog_items, tmp_path):
    client = redis.Redis.from_url(system.redis)
    user = f"forget-{uuid.uuid4().hex[:8]}"
    old = [event(user, catalog_items[1], "VIEW"), event(user, catalog_items[2], "CLICK"),
           event(user, catalog_items[3], "PURCHASE")]
    producer.send_events(old, wait=True)
    wait_for(lambda: recommend(system.gateway, user).strategy == gateway_pb2.STRATEGY_PERSONALIZED, timeout=10.0,
             what="the user personalised")

    with grpc.insecure_channel(system.stack.gateway_addr) as channel:
        reply = gateway_pb2_grpc.PrivacyServiceStub(channel).ForgetUser(
            gateway_pb2.ForgetUserRequest(user_id=user), timeout=5)
    assert reply.keys_deleted >= 3
    left = {k for k in client.keys(f"{keys.PREFIX}:{{u:{user}}}:*".encode())}
    assert left <= {keys.forgotten(user), keys.attribution(user, "outbox"), keys.attribution(user, "seq")}, left
    after = recommend(system.gateway, user)
    assert after.strategy == gateway_pb2.STRATEGY_TRENDING
    assert [i.item_id for i in after.items] == [i.item_id for i in recommend(system.gateway, f"new-{uuid.uuid4().hex}").items]

    # The old events again (a redelivery, a replay), then one event after the forget: only that one applies.
    forgot_ms = int(client.get(keys.forgotten(user)))
    comeback = event(user, catalog_items[5], "VIEW")
    comeback.occurred_at.FromMilliseconds(forgot_ms + 1)
    producer.send_events([*old, comeback], wait=True)
    wait_for(lambda: history(client, user), timeout=10.0, what="the event after the forget applied")
    assert history(client, user) == [catalog_items[5].encode()]  # the redelivered ones were not
    assert not client.smembers(keys.purchased(user))

    out = tmp_path / "events.jsonl"
    async with redis.asyncio.Redis.from_url(system.redis) as aredis:
        forgotten = await read_forgotten(aredis)
    result = await export_events(system.kafka, out, forgotten=forgotten)
    mine = [line for line in out.read_text().splitlines() if user in line]
    assert len(mine) == 1 and catalog_items[5] in mine[0]
    assert result.forgotten >= 2 * len(old)  # the first publication and the redelivery
