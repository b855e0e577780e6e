"""An agent's batch is written before it is given back to faust (which then acks it)."""
import asyncio

import pytest
from prometheus_client import CollectorRegistry

from services.features.agents import write_batch
from services.features.health import WorkerHealth
from services.features.metrics import FeaturesMetrics


class Pong:
    async def ping(self):
        return True


async def _no_sleep(_):
    return None


async def test_a_failing_batch_is_retried_and_not_live_meanwhile(monkeypatch):
    monkeypatch.setattr("asyncio.sleep", _no_sleep)  # tenacity's backoff
    metrics, health = FeaturesMetrics(CollectorRegistry()), WorkerHealth(Pong())
    seen_live = []

    async def write(records):
        if len(seen_live) < 2:
            seen_live.append((await health.live())[0])
            raise KeyError("a bug, or a dead-letter send that failed")
        seen_live.append((await health.live())[0])
        return len(records)

    assert await write_batch("process_events", write, ["r1", "r2"], health, metrics) == 2
    assert seen_live == [True, False, False]  # not live from the first failure until the batch is written
    assert metrics.batch_failures.labels("process_events")._value.get() == 2
    assert (await health.live()) == (True, {"live": True, "reasons": []})


async def test_cancellation_is_not_retried():
    metrics, health = FeaturesMetrics(CollectorRegistry()), WorkerHealth(Pong())
    started = asyncio.Event()

    async def write(records):
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(write_batch("process_events", write, ["r1"], health, metrics))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert metrics.batch_failures.labels("process_events")._value.get() == 0


class Message:
    def __init__(self, offset):
        self.offset = offset


class Event:
    def __init__(self, offset):
        self.message = Message(offset)


class Stream:
    def __init__(self):
        self.acked = []

    async def ack(self, event):
        self.acked.append(event.message.offset)
        return True


async def test_the_writer_acks_after_the_write_and_merges_what_queued_meanwhile():
    from services.features.agents import BatchWriter

    stream, written, gate = Stream(), [], asyncio.Event()

    async def write(records):
        written.append([r.offset for r in records])
        if len(written) == 1:
            await gate.wait()  # the first write is slow: more events queue behind it
        return len(records)

    writer = BatchWriter("process_events", stream, write, 4, WorkerHealth(Pong()), FeaturesMetrics(CollectorRegistry()))
    task = asyncio.ensure_future(writer.run())
    await writer.put([Event(0), Event(1)])
    while not written:
        await asyncio.sleep(0)
    for batch in ([Event(2)], [Event(3), Event(4)], [Event(5), Event(6)], [Event(7)]):
        await writer.put(batch)
    assert stream.acked == []  # nothing acked before its write
    assert not writer.room.is_set()  # 2 * max_ = 8 events held: the agent waits before the next
    blocked = asyncio.ensure_future(writer.put([Event(8)]))
    await asyncio.sleep(0)
    assert not blocked.done()
    gate.set()
    await blocked
    while len(stream.acked) < 9:
        await asyncio.sleep(0)
    assert written[:2] == [[0, 1], [2, 3, 4, 5]]  # what queued during a write goes next, up to max_
    assert sum(written, []) == list(range(9)) and all(len(w) <= 4 for w in written)  # in order
    assert stream.acked == list(range(9))
    task.cancel()


async def test_a_trickle_waits_the_window_for_more_before_writing():
    from services.features.agents import BatchWriter

    stream, written = Stream(), []

    async def write(records):
        written.append([r.offset for r in records])
        return len(records)

    writer = BatchWriter("process_events", stream, write, 3, WorkerHealth(Pong()), FeaturesMetrics(CollectorRegistry()),
                         within=3600.0)
    task = asyncio.ensure_future(writer.run())
    await writer.put([Event(0)])
    for _ in range(5):
        await asyncio.sleep(0)
    assert written == []  # one event, the window not over: waiting for more
    await writer.put([Event(1), Event(2)])  # max_ reached: written without waiting out the window
    while len(stream.acked) < 3:
        await asyncio.sleep(0)
    assert written == [[0, 1, 2]]
    task.cancel()
