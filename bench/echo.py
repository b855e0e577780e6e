"""A trivial GatewayService on the same stack as the real one: grpc.aio, the shared
ServerInterceptor (request id, error mapping, RPC metrics), health and reflection.

``Recommend`` answers a prebuilt response of k items without any I/O, so the
serve benchmark can tell what the gRPC stack itself costs from what the gateway
path adds. Run as ``python -m bench.echo --port N``.
"""
from __future__ import annotations

import argparse
import asyncio

import grpc
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.gc_tuning import freeze_startup_heap
from services.common.grpc_server import ServerInterceptor, add_health_and_reflection, set_health
from services.common.rpc_metrics import make_rpc_metrics
from services.gateway.server import SERVICE_NAMES


class EchoGateway(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, max_k: int = 100) -> None:
        items = [gateway_pb2.RecommendedItem(item_id=str(1000 + i), score=1.0 - i * 1e-3) for i in range(max_k)]
        self._responses = [gateway_pb2.RecommendResponse(items=items[:k], strategy=gateway_pb2.STRATEGY_PERSONALIZED,
                                                         model_version="echo") for k in range(max_k + 1)]

    async def Recommend(self, request, context):
        return self._responses[min(request.k or 10, len(self._responses) - 1)]


async def create_server(addr: str) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=[ServerInterceptor(make_rpc_metrics("echo"))])
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(EchoGateway(), server)
    health = await add_health_and_reflection(server, SERVICE_NAMES)
    port = server.add_insecure_port(addr)
    await server.start()
    await set_health(health, SERVICE_NAMES, True)
    return server, port


async def _serve(addr: str) -> None:
    server, _ = await create_server(addr)
    freeze_startup_heap()  # as every service does after start-up (same stack)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(_serve(f"127.0.0.1:{args.port}"))


if __name__ == "__main__":
    main()
