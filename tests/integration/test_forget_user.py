"""ForgetUser at the store: every key of the user goes, and events from before the forget
(redelivered, replayed) never bring the state back; later events do. Runs on both stores."""
import numpy as np
import pytest

from services.common.stores import keys
from services.common.stores.memory import MemoryUserStateStore
from services.common.stores.user_state import EmbeddingWrite, EventWrite, RedisUserStateStore

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        return MemoryUserStateStore(), None
    client = request.getfixturevalue("redis_client")
    return RedisUserStateStore(client), client


async def test_forget_removes_everything_and_redeliveries_do_not_recreate_it(store):
    users, client = store
    before = [EventWrite(f"e{n}", "alice", f"i{n}", 4 if n == 2 else 1, 1_000 + n) for n in range(5)]
    await users.apply_events(before + [EventWrite("b1", "bob", "i9", 1, 1_000)])
    await users.put_embeddings([EmbeddingWrite("alice", "v1", 5, np.ones(4, dtype=np.float32))])
    if client is not None:  # the attribution job's join state of the user (lists served, waiting events)
        await client.hset(keys.attribution("alice", "lists"), "r1", "{}")
        await client.rpush(keys.attribution("alice", "pending"), "e9")
        await client.hset(keys.attribution("alice", "outbox"), "1", "{}")  # counts on their way: kept

    deleted = await users.forget("alice", now_ms=2_000)

    assert deleted >= 4  # history, purchases, counters, dedup, embedding
    (alice,) = await users.get_states(["alice"], 10)
    assert not alice.known and alice.purchased == set() and alice.embedding is None
    if client is not None:
        assert sorted(await client.keys(f"{keys.PREFIX}:{{u:alice}}:*".encode())) == sorted(
            [keys.forgotten("alice"), keys.attribution("alice", "outbox")])
        assert await client.zscore(keys.FORGOTTEN_USERS, "alice") == 2_000
    assert await users.apply_events(before) == [False] * len(before)  # redelivered: not applied
    (alice,) = await users.get_states(["alice"], 10)
    assert alice.history == []
    (bob,) = await users.get_states(["bob"], 10)
    assert bob.history == ["i9"]  # nobody else is touched

    assert await users.apply_events([EventWrite("later", "alice", "i7", 1, 2_001)]) == [True]
    (alice,) = await users.get_states(["alice"], 10)
    assert alice.history == ["i7"]  # a shopper who comes back after the forget starts afresh
