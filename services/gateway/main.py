"""Composition root of the gateway: ``build`` wires it, ``running`` runs it, ``main`` is the command.

``build(settings)`` is the only place the gateway's dependencies are made (Redis, the
catalog cache, the ranker channel and client, the stores, the trending fallback, the
Kafka producer, the publish executor, metrics). ``running(settings, deps)`` starts the
server and its background tasks and stops them all, in reverse order, on exit; ``main``
and every test that starts the gateway go through it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor


from services.common.grpc_server import RunningServer, cancel_tasks
from services.common.infra import connect_redis
from services.common.service_main import run_service
from services.common.stores.catalog import CatalogCache, RedisCatalogStore
from services.common.stores.trending import RedisTrendingStore
from services.common.stores.user_state import RedisUserStateStore
from services.common.tls import channel as grpc_channel
from services.experiments.store import ExperimentStore, ExperimentWatcher
from services.gateway.fallback import TrendingFallback
from services.gateway.impressions import ImpressionLog
from services.gateway.guard import make_guard
from services.gateway.metrics import gateway_metrics
from services.gateway.publisher import LazyProducer
from services.gateway.ranker_client import RankerClient, channel_options, ranker_target
from services.gateway import http_api
from services.gateway.server import SERVICE_NAMES, GatewayDeps, create_server, make_servicer, watch_readiness
from services.gateway.settings import GatewaySettings
from services.rules.registry import FilterRegistry
from services.gateway.shadow import ShadowScorer

logger = logging.getLogger(__name__)

# One long-lived channel to the ranker; keepalives notice a dead peer between requests.
RANKER_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


def build(settings: GatewaySettings) -> GatewayDeps:
    """The gateway's dependencies; nothing connects yet (Redis, the ranker channel and Kafka
    all connect on first use). Call it on the event loop that will run the gateway."""
    metrics = gateway_metrics()
    redis = connect_redis(settings.redis_url)
    catalog = CatalogCache(RedisCatalogStore(redis), settings.catalog_refresh_s)
    # Mutual TLS when the ranker's CA is configured (settings.ranker_tls), else plaintext.
    # round_robin over every replica the target names, one retry on UNAVAILABLE (ranker_client.py).
    channel = grpc_channel(ranker_target(settings.ranker_addr), settings.ranker_tls(),
                           channel_options(RANKER_CHANNEL_OPTIONS))
    ranker = RankerClient.for_settings(settings, channel, metrics)

    async def loaded_models():
        """The versions the ranker holds; None when it cannot say (then the store's own check
        when the definition was set is all there is)."""
        try:
            reply = await ranker.list_models(settings.ranker_timeout_s * 10)
        except Exception as exc:
            logger.warning("cannot ask the ranker which model versions it holds: %s", exc or type(exc).__name__)
            return None
        return {model.version for model in reply.models}

    return GatewayDeps(
        redis=redis,
        ranker=ranker,
        ranker_channel=channel,
        user_states=RedisUserStateStore(redis),
        catalog=catalog,
        fallback=TrendingFallback(RedisTrendingStore(redis), lambda: catalog.snapshot, settings.trending_pool,
                                  cache_s=settings.trending_cache_s),
        publisher=LazyProducer(settings.kafka_bootstrap_servers, timeout_s=settings.kafka_timeout_s),
        executor=ThreadPoolExecutor(settings.executor_threads, thread_name_prefix="gateway-publish"),
        metrics=metrics,
        guard=make_guard(settings.api_clients(), metrics),
        impressions=ImpressionLog.to_kafka(settings.kafka_bootstrap_servers, settings.kafka_timeout_s, metrics,
                                           settings.impressions_buffer, settings.impressions_batch_max,
                                           settings.impressions_linger_s)
        if settings.impressions_enabled else None,
        experiments=ExperimentWatcher(ExperimentStore(redis), settings.experiments_poll_s, loaded_models,
                                      on_error=lambda reason: metrics.experiment_config_errors.labels(reason).inc()),
        shadow=ShadowScorer(ranker, metrics, settings.shadow_sample_rate, settings.shadow_max_in_flight,
                            settings.ranker_timeout_s),
        filters=FilterRegistry(redis),
    )


@contextlib.asynccontextmanager
async def running(settings: GatewaySettings, deps: GatewayDeps | None = None) -> AsyncIterator[RunningServer[GatewayDeps]]:
    """The gateway serving on ``settings.addr`` (NOT_SERVING until its stores answer), with its
    catalog refresher and readiness watcher; stopped and closed, in reverse order, on exit.

    ``deps`` defaults to ``build(settings)``; either way ``running`` owns them and closes them.
    """
    deps = build(settings) if deps is None else deps
    async with contextlib.AsyncExitStack() as stack:
        # Pushed in order of start, so that exit undoes them from the last one back.
        stack.push_async_callback(deps.redis.aclose)
        stack.push_async_callback(deps.ranker_channel.close)
        stack.push_async_callback(asyncio.to_thread, deps.publisher.close)
        stack.callback(deps.executor.shutdown, wait=True)
        stack.push_async_callback(deps.ranker.close)  # its batcher, before the channel under it
        catalog_refresh = asyncio.create_task(deps.catalog.run(), name="catalog-refresh")
        stack.push_async_callback(cancel_tasks, [catalog_refresh])
        await _start_closed_loop(settings, deps, stack)
        servicer = make_servicer(settings, deps)  # one servicer: gRPC and HTTP run the same rules
        built = await create_server(settings, deps, servicer)
        await built.start(stack, SERVICE_NAMES, settings.grace_s)
        http_port = None
        if settings.http_addr:
            app = http_api.create_app(settings, servicer, deps.guard, deps.catalog, built.health, deps.metrics)
            http_port = await stack.enter_async_context(http_api.serving(settings, app))
            logger.info("gateway HTTP/JSON API%s on port %d", " and demo page" if settings.http_demo else "",
                        http_port)
        # Cancelled first on exit, so that it cannot flip health back to SERVING during the grace.
        readiness = asyncio.create_task(watch_readiness(deps, built.health, settings.readiness_interval_s),
                                        name="readiness")
        stack.push_async_callback(cancel_tasks, [readiness])
        logger.info("gateway listening on port %d", built.port,
                    extra={"ranker_addr": settings.ranker_addr, "tls": settings.tls_cert_file is not None,
                           "ranker_tls": settings.ranker_tls_ca_file is not None, "auth": settings.auth})
        if settings.auth == "disabled":
            logger.warning("API authentication is disabled (SHOPSTREAM_GATEWAY_AUTH=disabled): anyone who reaches "
                           "port %d can call every method; for development only", built.port)
        elif settings.tls_cert_file is None:
            logger.warning("API tokens travel in plaintext: set SHOPSTREAM_GATEWAY_TLS_CERT_FILE and "
                           "SHOPSTREAM_GATEWAY_TLS_KEY_FILE unless TLS ends in front of the gateway")
        yield RunningServer.of(built, deps, http_port)
        logger.info("gateway stopping")
    logger.info("gateway stopped")


async def _start_closed_loop(settings: GatewaySettings, deps: GatewayDeps, stack: contextlib.AsyncExitStack) -> None:
    """Experiments, shadow scoring and impressions (docs/experiments.md); each stops on exit
    after the server (nothing serves any more), before the ranker client and the executor
    it needs."""
    if deps.shadow is not None:
        stack.push_async_callback(deps.shadow.close)
    if deps.experiments is not None:
        try:  # a definition in Redis serves from the first request, not a poll later
            await deps.experiments.poll_once()
        except Exception as exc:
            logger.warning("experiment definitions not read at start-up (polling goes on): %s",
                           exc or type(exc).__name__)
        watcher = asyncio.create_task(deps.experiments.run(), name="experiments")
        stack.push_async_callback(cancel_tasks, [watcher])
    if deps.impressions is not None:
        drain = asyncio.create_task(deps.impressions.run(), name="impressions")
        stack.push_async_callback(deps.impressions.close, max(settings.kafka_timeout_s, 1.0))
        stack.push_async_callback(cancel_tasks, [drain])


def main(argv: list[str] | None = None) -> int:
    return run_service(argv, prog="shopstream gateway", settings_cls=GatewaySettings, running=running,
                       description="Run the gateway gRPC server (GatewayService, grpc.health.v1, reflection): recommendations "
                       "from the ranker, trending when it cannot answer, events to Kafka.")
