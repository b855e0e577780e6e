"""Concurrent state reads share one store call; errors reach every caller of that call."""
import asyncio


from services.common.stores.coalescing import CoalescingStateReader
from services.common.stores.user_state import UserState


class CountingStore:
    """Records every call; a call stays in flight until ``release`` is set (set by default)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail
        self.release = asyncio.Event()
        self.release.set()
        self.in_flight = asyncio.Event()

    async def get_states(self, user_ids, history_len, *, with_embedding=True):
        self.calls.append(list(user_ids))
        self.in_flight.set()
        await self.release.wait()
        if self.fail:
            raise ConnectionError("redis down")
        return [UserState(user_id=u, history=[f"{u}-item"] * history_len) for u in user_ids]


async def test_concurrent_reads_share_one_call_and_get_their_own_state():
    store = CountingStore()
    reader = CoalescingStateReader(store, history_len=2)
    states = await asyncio.gather(*(reader.get(f"u{i}") for i in range(10)))
    assert [s.user_id for s in states] == [f"u{i}" for i in range(10)]
    assert states[3].history == ["u3-item", "u3-item"]
    assert store.calls == [[f"u{i}" for i in range(10)]]


async def test_calls_arriving_during_a_round_trip_go_in_the_next_one():
    store = CountingStore()
    store.release.clear()
    reader = CoalescingStateReader(store, history_len=1, max_batch=4)
    first = asyncio.ensure_future(reader.get("a"))
    await store.in_flight.wait()  # "a" is in flight
    rest = asyncio.gather(*(reader.get(u) for u in "bcdefg"))
    await asyncio.sleep(0)  # the other six are queued behind it
    store.release.set()
    rest = await rest
    assert (await first).user_id == "a"
    assert [s.user_id for s in rest] == list("bcdefg")
    assert store.calls == [["a"], ["b", "c", "d", "e"], ["f", "g"]]


async def test_a_store_error_fails_every_caller_of_that_round_trip():
    reader = CoalescingStateReader(CountingStore(fail=True), history_len=1)
    results = await asyncio.gather(reader.get("a"), reader.get("b"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
