"""``shopstream recommend USER``: what the storefront would get from the gateway."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import grpc

from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.stack.state import NO_STACK, find_state


def _channel(addr: str, ca_file: Path | None) -> grpc.Channel:
    if ca_file is None:
        return grpc.insecure_channel(addr)
    return grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes()))


def fetch(addr: str, user: str, k: int = 10, timeout: float = 1.0, *, token: str | None = None,
          ca_file: Path | None = None) -> gateway_pb2.RecommendResponse:
    """One Recommend call, with the client's API token and over TLS when given."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with _channel(addr, ca_file) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        return stub.Recommend(gateway_pb2.RecommendRequest(user_id=user, k=k), timeout=timeout, metadata=metadata)


def describe(resp: gateway_pb2.RecommendResponse) -> str:
    strategy = gateway_pb2.Strategy.Name(resp.strategy).removeprefix("STRATEGY_").lower()
    flag = f" DEGRADED ({resp.degraded_reason})" if resp.degraded else ""
    items = ", ".join(f"{it.item_id}" for it in resp.items)
    return f"[{strategy}{flag} model={resp.model_version or '-'}] {items}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shopstream recommend",
                                     description="Ask the gateway for a user's recommendations.")
    parser.add_argument("user")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--gateway", default=os.environ.get("SHOPSTREAM_GATEWAY_ADDR"),
                        help="host:port of the gateway (default: $SHOPSTREAM_GATEWAY_ADDR, else the stack "
                             "`shopstream up` runs here, from var/stack.json)")
    parser.add_argument("--token", default=os.environ.get("SHOPSTREAM_TOKEN"),
                        help="API token (default: $SHOPSTREAM_TOKEN); not needed for a development gateway")
    parser.add_argument("--ca", type=Path, default=None,
                        help="CA certificate of a gateway that serves TLS (PEM)")
    args = parser.parse_args(argv)
    gateway = args.gateway
    if not gateway:
        state = find_state()
        if state is None:
            parser.exit(1, f"shopstream recommend: {NO_STACK.format(flag='--gateway HOST:PORT')}\n")
        gateway = state.gateway
    try:
        resp = fetch(gateway, args.user, args.k, token=args.token, ca_file=args.ca)
    except grpc.RpcError as exc:
        parser.exit(1, f"shopstream recommend: {exc.code().name} from {gateway}: {exc.details()}\n")
    print(describe(resp))
    return 0
