"""Micro-batching through the real gRPC ranker: concurrent callers each get their own
answer, and a full queue answers RESOURCE_EXHAUSTED instead of queueing without bound."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from shopstream.ranker.v1 import ranker_pb2, ranker_pb2_grpc

from services.common.stores.catalog import CatalogCache, RedisCatalogStore
from services.common.stores.user_state import EventWrite, RedisUserStateStore
from services.ranker.metrics import ranker_metrics
from services.ranker.model_holder import ModelHolder
from services.ranker.server import RankerDeps, create_server
from services.ranker.settings import RankerSettings
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


async def start(tmp_path, redis_client, redis_url, **settings):
    publish_toy_bundle(tmp_path, ITEMS, vectors())
    s = RankerSettings(addr="127.0.0.1:0", models_dir=tmp_path, redis_url=redis_url, prefer_gpu=False, **settings)
    executor = ThreadPoolExecutor(2)
    holder = ModelHolder(tmp_path, executor, ranker_metrics(), prefer_gpu=False, scoring=s.scoring_config())
    catalog = CatalogCache(RedisCatalogStore(redis_client))
    catalog.on_change(holder.on_catalog)
    deps = RankerDeps(holder, RedisUserStateStore(redis_client), executor, ranker_metrics())
    server, port = await create_server(s, deps)
    await server.start()
    await catalog.refresh()
    assert await holder.poll_once()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return server, channel, ranker_pb2_grpc.RankerServiceStub(channel), deps, executor


async def stop(server, channel, deps, executor):
    await channel.close()
    await server.stop(0)
    await deps.batcher.close()
    executor.shutdown(wait=True)


async def test_concurrent_calls_are_batched_and_routed_to_their_caller(tmp_path, redis_client, redis_url):
    server, channel, stub, deps, executor = await start(tmp_path, redis_client, redis_url,
                                                        batch_max_size=16, batch_max_wait_ms=20)
    states = RedisUserStateStore(redis_client)
    for axis in range(DIM):  # user u<axis> has seen item <axis>-1: its top item is <axis>-3
        await states.apply_events([EventWrite(f"e{axis}", f"u{axis}", f"{axis}-1", 1, 1)])
    sizes_before = ranker_metrics().batch_size._sum.get()
    calls = [stub.Rank(ranker_pb2.RankRequest(user_id=f"u{axis % DIM}", k=1), timeout=10) for axis in range(30)]
    responses = await asyncio.gather(*calls)
    assert [r.items[0].item_id for r in responses] == [f"{axis % DIM}-3" for axis in range(30)]
    assert ranker_metrics().batch_size._sum.get() - sizes_before == 30
    await stop(server, channel, deps, executor)


async def test_full_queue_answers_resource_exhausted(tmp_path, redis_client, redis_url):
    server, channel, stub, deps, executor = await start(tmp_path, redis_client, redis_url,
                                                        batch_max_size=1, batch_max_wait_ms=0, queue_max=2)
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
    await stop(server, channel, deps, executor)
