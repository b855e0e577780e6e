"""Builds the ranker's gRPC server over its dependencies (``main.build`` makes them)."""
from __future__ import annotations

import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Sequence

import grpc
from shopstream.ranker.v1 import ranker_pb2, ranker_pb2_grpc

from services.common.grpc_server import BoundServer, ServerInterceptor, add_health_and_reflection, set_health
from services.common.tls import bind
from services.common.stores.catalog import CatalogCache
from services.common.stores.user_state import UserStateStore
from services.common.batching import MicroBatcher
from services.ranker.engine import RankEngine, Ranked, RankJob
from services.ranker.metrics import RankerMetrics
from services.ranker.model_holder import ModelHolder
from services.ranker.servicer import RankerServicer
from services.ranker.settings import RankerSettings

SERVICE_NAMES = (ranker_pb2.DESCRIPTOR.services_by_name["RankerService"].full_name,)


@dataclass(frozen=True)
class RankerDeps:
    """Everything the ranker runs on, made by ``main.build`` and closed by ``main.running``."""

    redis: object  # redis.asyncio client under the stores
    holder: ModelHolder
    catalog: CatalogCache  # feeds ``holder.on_catalog``
    user_states: UserStateStore
    batcher: MicroBatcher[RankJob, Ranked]
    executor: Executor  # batches, Similar and model loads
    encode_pool: Executor  # chunks of large encoder batches
    metrics: RankerMetrics


def make_batcher(settings: RankerSettings, executor: Executor, metrics: RankerMetrics) -> MicroBatcher[RankJob, Ranked]:
    """The Rank micro-batcher over the engine, with its metrics."""
    engine = RankEngine(on_fallback=metrics.exact_fallbacks.inc, reason_window=settings.reason_window)

    def run(jobs: Sequence[RankJob]) -> list:
        start = time.perf_counter()
        try:
            return engine(jobs)
        finally:
            metrics.batch_duration.observe(time.perf_counter() - start)

    def on_batch(size: int, oldest_wait_s: float) -> None:
        metrics.batch_size.observe(size)
        metrics.batch_wait.observe(oldest_wait_s)

    return MicroBatcher(run, executor, max_batch_size=settings.batch_max_size,
                        max_wait_s=settings.batch_max_wait_ms / 1000.0, max_queue=settings.queue_max,
                        max_in_flight=settings.batch_max_in_flight, name="ranker", on_batch=on_batch)


async def create_server(settings: RankerSettings, deps: RankerDeps) -> BoundServer:
    """The ranker's gRPC server on ``settings.addr`` (port 0 picks a free one; mutual TLS when a
    certificate is configured), not started."""
    server = grpc.aio.server(interceptors=[ServerInterceptor(deps.metrics.rpc)])
    ranker_pb2_grpc.add_RankerServiceServicer_to_server(
        RankerServicer(deps.holder, deps.user_states, deps.executor, deps.metrics,
                       max_k=settings.max_k, history_len=settings.history_len,
                       max_batch_requests=settings.rank_batch_max_requests, batcher=deps.batcher),
        server,
    )
    health_servicer = await add_health_and_reflection(server, SERVICE_NAMES)
    await set_health(health_servicer, SERVICE_NAMES, deps.holder.current is not None)

    async def serving(_model) -> None:
        await set_health(health_servicer, SERVICE_NAMES, True)

    deps.holder.on_swap(serving)
    port = bind(server, settings.addr, settings.server_tls())
    return await BoundServer.with_health(server, port, health_servicer, settings.health_addr)
