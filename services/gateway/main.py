"""Composition root: settings -> logging -> Redis, stores, catalog cache, ranker channel,
Kafka producer -> server. Teardown runs in reverse order."""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from services.common.grpc_server import cancel_tasks, run_until_signalled, set_health
from services.common.infra import connect_redis
from services.common.logs import configure_logging
from services.common.metrics_http import serve_metrics
from services.common.settings import load
from services.common.stores.catalog import CatalogCache, RedisCatalogStore
from services.common.stores.trending import RedisTrendingStore
from services.common.stores.user_state import RedisUserStateStore
from services.gateway.fallback import TrendingFallback
from services.gateway.metrics import gateway_metrics
from services.gateway.publisher import LazyProducer
from services.gateway.ranker_client import RankerClient
from services.gateway.server import SERVICE_NAMES, GatewayDeps, create_server, watch_readiness
from services.gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

# One long-lived channel to the ranker; keepalives notice a dead peer between requests.
RANKER_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


async def serve(settings: GatewaySettings) -> None:
    metrics = gateway_metrics()
    redis = connect_redis(settings.redis_url)
    catalog = CatalogCache(RedisCatalogStore(redis), settings.catalog_refresh_s)
    channel = grpc.aio.insecure_channel(settings.ranker_addr, options=RANKER_CHANNEL_OPTIONS)
    producer = LazyProducer(settings.kafka_bootstrap_servers,
                            bootstrap_timeout_ms=int(settings.kafka_timeout_s * 1000),
                            max_block_ms=int(settings.kafka_timeout_s * 1000))
    executor = ThreadPoolExecutor(settings.executor_threads, thread_name_prefix="gateway-publish")
    deps = GatewayDeps(
        redis=redis,
        ranker=RankerClient.for_settings(settings, channel, metrics),
        user_states=RedisUserStateStore(redis),
        catalog=catalog,
        fallback=TrendingFallback(RedisTrendingStore(redis), lambda: catalog.snapshot, settings.trending_pool,
                                  cache_s=settings.trending_cache_s),
        publisher=producer,
        executor=executor,
        metrics=metrics,
    )
    server, port = await create_server(settings, deps)
    tasks: list[asyncio.Task] = []

    async def start() -> None:
        serve_metrics(settings.metrics_port)
        await server.start()
        tasks.append(asyncio.create_task(catalog.run(), name="catalog-refresh"))
        tasks.append(asyncio.create_task(watch_readiness(deps, settings.readiness_interval_s), name="readiness"))
        logger.info("gateway listening on port %d", port, extra={"ranker_addr": settings.ranker_addr})

    async def stop() -> None:
        await cancel_tasks(tasks)
        await set_health(deps.health, SERVICE_NAMES, False)
        await server.stop(settings.grace_s)
        await deps.ranker.close()
        executor.shutdown(wait=True)
        await asyncio.to_thread(producer.close)
        await channel.close()
        await redis.aclose()
        logger.info("gateway stopped")

    await run_until_signalled(start, stop)


def main() -> None:
    settings = load(GatewaySettings)
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))
