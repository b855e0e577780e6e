"""``shopstream recommend USER``: what the storefront would get from the gateway."""
from __future__ import annotations

import argparse
import os

import grpc

from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc


def fetch(addr: str, user: str, k: int = 10, timeout: float = 1.0) -> gateway_pb2.RecommendResponse:
    with grpc.insecure_channel(addr) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        return stub.Recommend(gateway_pb2.RecommendRequest(user_id=user, k=k), timeout=timeout)


def describe(resp: gateway_pb2.RecommendResponse) -> str:
    strategy = gateway_pb2.Strategy.Name(resp.strategy).removeprefix("STRATEGY_").lower()
    flag = f" DEGRADED ({resp.degraded_reason})" if resp.degraded else ""
    items = ", ".join(f"{it.item_id}" for it in resp.items)
    return f"[{strategy}{flag} model={resp.model_version or '-'}] {items}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shopstream recommend")
    parser.add_argument("user")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--gateway", default=os.environ.get("SHOPSTREAM_GATEWAY_ADDR", "127.0.0.1:50052"))
    args = parser.parse_args(argv)
    print(describe(fetch(args.gateway, args.user, args.k)))
    return 0
