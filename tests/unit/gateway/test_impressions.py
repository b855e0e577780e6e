"""The impression log: bounded, never waits, counts what it drops."""
from __future__ import annotations

import asyncio

from shopstream.events.v1 import events_pb2

from services.gateway.impressions import ImpressionLog
from services.gateway.metrics import gateway_metrics


def counter(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def imp(n: int) -> events_pb2.Impression:
    return events_pb2.Impression(recommendation_id=f"r{n}", user_id=f"u{n}")


async def test_a_full_buffer_drops_and_counts_without_waiting():
    log = ImpressionLog(None, gateway_metrics(), capacity=3, batch_max=10)
    dropped = counter("shopstream_gateway_impressions_dropped_total", reason="buffer_full")
    assert [log.offer(imp(n)) for n in range(5)] == [True, True, True, False, False]
    assert counter("shopstream_gateway_impressions_dropped_total", reason="buffer_full") - dropped == 2
    assert len(log) == 3


async def test_drains_in_batches_while_a_publish_is_out():
    release = asyncio.Event()
    batches: list[list[str]] = []

    async def send(batch):
        batches.append([i.recommendation_id for i in batch])
        if len(batches) == 1:
            await release.wait()  # the first publish is slow: requests go on buffering meanwhile
        return len(batch)

    log = ImpressionLog(send, gateway_metrics(), capacity=100, batch_max=10)
    published = counter("shopstream_gateway_impressions_published_total")
    task = asyncio.create_task(log.run())
    log.offer(imp(0))
    async with asyncio.timeout(10):
        while not batches:
            await asyncio.sleep(0.01)
    for n in range(1, 16):
        assert log.offer(imp(n))  # never blocks on the publish in flight
    release.set()
    async with asyncio.timeout(10):
        while counter("shopstream_gateway_impressions_published_total") - published < 16:
            await asyncio.sleep(0.01)
    task.cancel()
    assert [len(b) for b in batches] == [1, 10, 5]
    assert [r for b in batches for r in b] == [f"r{n}" for n in range(16)]


async def test_a_failed_publish_is_counted_and_the_log_goes_on():
    calls = []

    async def send(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise ConnectionError("broker down")
        return len(batch)

    log = ImpressionLog(send, gateway_metrics(), capacity=100, batch_max=10, retry_s=0.0)
    failed = counter("shopstream_gateway_impressions_dropped_total", reason="publish_failed")
    published = counter("shopstream_gateway_impressions_published_total")
    task = asyncio.create_task(log.run())
    for n in range(3):
        log.offer(imp(n))
    async with asyncio.timeout(10):
        while counter("shopstream_gateway_impressions_dropped_total", reason="publish_failed") - failed < 3:
            await asyncio.sleep(0.01)
    log.offer(imp(9))
    async with asyncio.timeout(10):
        while counter("shopstream_gateway_impressions_published_total") - published < 1:
            await asyncio.sleep(0.01)
    task.cancel()


async def test_close_publishes_what_is_left():
    sent, closed = [], []

    async def send(batch):
        sent.extend(batch)
        return len(batch)

    async def close_sender():
        closed.append(True)

    log = ImpressionLog(send, gateway_metrics(), capacity=100, batch_max=2, close_sender=close_sender)
    for n in range(5):
        log.offer(imp(n))
    await log.close(timeout_s=5)
    assert [i.recommendation_id for i in sent] == [f"r{n}" for n in range(5)]
    assert closed == [True]
    assert not log.offer(imp(6))  # closed


async def test_a_batch_gathers_for_the_linger():
    batches: list[int] = []

    async def send(batch):
        batches.append(len(batch))
        return len(batch)

    log = ImpressionLog(send, gateway_metrics(), capacity=100, batch_max=50, linger_s=0.2)
    task = asyncio.create_task(log.run())
    for n in range(5):  # the first wakes the drain, which lingers while the others arrive
        log.offer(imp(n))
        await asyncio.sleep(0)
    async with asyncio.timeout(10):
        while sum(batches) < 5:
            await asyncio.sleep(0.01)
    task.cancel()
    assert batches == [5]
