"""Micro-batching through the real gRPC ranker: concurrent callers each get their own
answer, and a full queue answers RESOURCE_EXHAUSTED instead of queueing without bound."""
from __future__ import annotations

import asyncio
import contextlib
import threading

import grpc
import numpy as np
import pytest
from shopstream.ranker.v1 import ranker_pb2

from services.common.stores.user_state import EventWrite, RedisUserStateStore
from services.ranker.metrics import ranker_metrics
from support.ranker_harness import Ranker
from support.toy_bundle import publish_toy_bundle

pytestmark = pytest.mark.integration

DIM = 6
ITEMS = [f"{axis}-{n}" for axis in range(DIM) for n in range(1, 4)]  # three items per axis


def vectors() -> np.ndarray:
    out = np.zeros((len(ITEMS), DIM), dtype=np.float32)
    for row, item in enumerate(ITEMS):
        axis, n = item.split("-")
        out[row, int(axis)] = 1.0 + 0.1 * int(n)
    return out


@contextlib.asynccontextmanager
async def started(tmp_path, redis_client, redis_url, **settings):
    publish_toy_bundle(tmp_path, ITEMS, vectors())
    async with Ranker(tmp_path, redis_client, redis_url, **settings) as ranker:
        await ranker.refresh_catalog()
        await ranker.load_model()
        yield ranker


async def test_concurrent_calls_are_batched_and_routed_to_their_caller(tmp_path, redis_client, redis_url):
    async with started(tmp_path, redis_client, redis_url, batch_max_size=16, batch_max_wait_ms=20) as ranker:
        await _batched_and_routed(ranker.stub, redis_client)


async def _batched_and_routed(stub, redis_client):
    states = RedisUserStateStore(redis_client)
    for axis in range(DIM):  # user u<axis> has seen item <axis>-1: its top item is <axis>-3
        await states.apply_events([EventWrite(f"e{axis}", f"u{axis}", f"{axis}-1", 1, 1)])
    sizes_before = ranker_metrics().batch_size._sum.get()
    calls = [stub.Rank(ranker_pb2.RankRequest(user_id=f"u{axis % DIM}", k=1), timeout=10) for axis in range(30)]
    responses = await asyncio.gather(*calls)
    assert [r.items[0].item_id for r in responses] == [f"{axis % DIM}-3" for axis in range(30)]
    assert ranker_metrics().batch_size._sum.get() - sizes_before == 30


async def test_full_queue_answers_resource_exhausted(tmp_path, redis_client, redis_url):
    async with started(tmp_path, redis_client, redis_url, batch_max_size=1, batch_max_wait_ms=0,
                       queue_max=2) as ranker:
        await _full_queue(ranker.stub, ranker.deps, redis_client)


async def _full_queue(stub, deps, redis_client):
    await RedisUserStateStore(redis_client).apply_events([EventWrite("e", "u", "0-1", 1, 1)])
    gate, entered = threading.Event(), threading.Event()
    engine = deps.batcher._fn

    def held(jobs):  # the first batch blocks, so later calls pile up in the queue
        entered.set()
        gate.wait()
        return engine(jobs)

    deps.batcher._fn = held
    first = asyncio.ensure_future(stub.Rank(ranker_pb2.RankRequest(user_id="u", k=1), timeout=10))
    while not entered.is_set():
        await asyncio.sleep(0.005)
    queued = [asyncio.ensure_future(stub.Rank(ranker_pb2.RankRequest(user_id="u", k=1), timeout=10))
              for _ in range(2)]
    while deps.batcher.depth < 2:
        await asyncio.sleep(0.005)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Rank(ranker_pb2.RankRequest(user_id="u", k=1), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    gate.set()
    for response in await asyncio.gather(first, *queued):
        assert response.items[0].item_id == "0-3"
