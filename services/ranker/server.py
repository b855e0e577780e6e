"""Builds the ranker's gRPC server; main() and the tests both go through create_server."""
from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health
from shopstream.ranker.v1 import ranker_pb2, ranker_pb2_grpc

from services.common.grpc_server import ServerInterceptor, add_health_and_reflection, set_health
from services.common.stores.user_state import UserStateStore
from services.ranker.metrics import RankerMetrics
from services.ranker.model_holder import ModelHolder
from services.ranker.servicer import RankerServicer
from services.ranker.settings import RankerSettings

SERVICE_NAMES = (ranker_pb2.DESCRIPTOR.services_by_name["RankerService"].full_name,)


@dataclass
class RankerDeps:
    holder: ModelHolder
    user_states: UserStateStore
    executor: Executor
    metrics: RankerMetrics
    # Filled in by create_server: main flips it to NOT_SERVING on shutdown.
    health: health.aio.HealthServicer | None = None


async def create_server(settings: RankerSettings, deps: RankerDeps) -> tuple[grpc.aio.Server, int]:
    """A bound, not yet started server and its actual port.

    Health is NOT_SERVING until the holder swaps in a loaded, warmed model.
    """
    server = grpc.aio.server(interceptors=[ServerInterceptor(deps.metrics.rpc)])
    ranker_pb2_grpc.add_RankerServiceServicer_to_server(
        RankerServicer(deps.holder, deps.user_states, deps.executor, deps.metrics,
                       max_k=settings.max_k, history_len=settings.history_len),
        server,
    )
    deps.health = add_health_and_reflection(server, SERVICE_NAMES)
    await set_health(deps.health, SERVICE_NAMES, deps.holder.current is not None)

    async def serving(_model) -> None:
        await set_health(deps.health, SERVICE_NAMES, True)

    deps.holder.on_swap(serving)
    port = server.add_insecure_port(settings.addr)
    if port == 0:
        raise RuntimeError(f"could not bind {settings.addr}")
    return server, port
