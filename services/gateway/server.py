"""Builds the gateway's gRPC server and its readiness watcher (main.py wires and runs them).

Ready means the gateway's own stores answer: Redis replies to PING and the
catalog was loaded once. The ranker being down does not make it unready,
since every RPC has a trending fallback.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.grpc_server import (
    BoundServer, CallGuard, ServerInterceptor, add_health_and_reflection, set_health,
)
from services.common.tls import bind
from services.common.periodic import raise_if_cancelling, run_periodically
from services.common.stores.catalog import CatalogCache
from services.common.stores.user_state import UserStateStore
from services.experiments.store import ExperimentWatcher
from services.gateway.fallback import TrendingFallback
from services.gateway.impressions import ImpressionLog
from services.gateway.metrics import GatewayMetrics
from services.gateway.ranker_client import RankerClient
from services.gateway.merchandising import MerchandisingServicer
from services.gateway.privacy import PrivacyServicer
from services.gateway.servicer import EventPublisher, GatewayServicer
from services.rules.registry import FilterRegistry
from services.gateway.shadow import ShadowScorer
from services.gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

# The storefront API first (its name is the one readiness probes ask for), then the
# merchandising (named filters) and privacy (ForgetUser) services on the same port.
SERVICE_NAMES = tuple(gateway_pb2.DESCRIPTOR.services_by_name[name].full_name
                      for name in ("GatewayService", "MerchandisingService", "PrivacyService"))


@dataclass
class GatewayDeps:
    """Everything the gateway runs on, made by ``main.build`` and closed by ``main.running``."""

    redis: object  # redis.asyncio client, for the readiness PING
    ranker: RankerClient
    ranker_channel: grpc.aio.Channel  # the RankerClient's channel, closed after it
    user_states: UserStateStore
    catalog: CatalogCache
    fallback: TrendingFallback
    publisher: EventPublisher
    executor: Executor
    metrics: GatewayMetrics
    guard: CallGuard | None = None  # API tokens and rate limits (guard.py); None: auth disabled
    # The closed loop (docs/experiments.md); None: off (tests that wire a gateway without them).
    impressions: ImpressionLog | None = None  # served lists to Kafka (impressions.py)
    experiments: ExperimentWatcher | None = None  # experiment definitions from Redis
    shadow: ShadowScorer | None = None  # a running experiment's shadow variant (shadow.py)
    filters: FilterRegistry | None = None  # named filter expressions (services/rules/registry.py)


def make_servicer(settings: GatewaySettings, deps: GatewayDeps) -> GatewayServicer:
    """The one GatewayServicer of a gateway: the gRPC server and the HTTP API both call it."""
    return GatewayServicer(settings, deps.ranker, deps.user_states, deps.fallback, deps.publisher,
                           deps.executor, deps.metrics, impressions=deps.impressions, experiments=deps.experiments,
                           shadow=deps.shadow, filters=deps.filters)


async def create_server(settings: GatewaySettings, deps: GatewayDeps,
                        servicer: GatewayServicer | None = None) -> BoundServer:
    """The gateway's gRPC server on ``settings.addr`` (port 0 picks a free one; TLS when a
    certificate is configured), not started; ``servicer`` defaults to ``make_servicer``."""
    server = grpc.aio.server(interceptors=[ServerInterceptor(deps.metrics.rpc, deps.guard)])
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
        servicer if servicer is not None else make_servicer(settings, deps),
        server,
    )
    if deps.filters is not None:
        gateway_pb2_grpc.add_MerchandisingServiceServicer_to_server(MerchandisingServicer(deps.filters), server)
    gateway_pb2_grpc.add_PrivacyServiceServicer_to_server(PrivacyServicer(deps.user_states, deps.metrics), server)
    health_servicer = await add_health_and_reflection(server, SERVICE_NAMES)
    await set_health(health_servicer, SERVICE_NAMES, False)
    port = bind(server, settings.addr, settings.server_tls())
    return await BoundServer.with_health(server, port, health_servicer, settings.health_addr)


async def check_ready(deps: GatewayDeps, catalog_loaded: asyncio.Event) -> bool:
    try:
        await deps.redis.ping()
        if not catalog_loaded.is_set():
            await deps.catalog.refresh()
            catalog_loaded.set()
    except Exception as exc:
        raise_if_cancelling()
        logger.warning("not ready: %s", exc)
        return False
    return True


async def watch_readiness(deps: GatewayDeps, health_servicer: health.aio.HealthServicer,
                          interval_s: float) -> None:
    """Keep ``health_servicer`` in step with the stores, forever (cancel to stop)."""
    catalog_loaded = asyncio.Event()
    serving: bool | None = None

    async def step() -> None:
        nonlocal serving
        ready = await check_ready(deps, catalog_loaded)
        if ready != serving:
            await set_health(health_servicer, SERVICE_NAMES, ready)
            logger.info("gateway %s", "SERVING" if ready else "NOT_SERVING")
            serving = ready

    await run_periodically(step, interval_s, what="readiness check")
