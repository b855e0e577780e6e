"""Composition root: settings -> logging -> Redis, stores, catalog cache, model holder -> server."""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from services.common.grpc_server import cancel_tasks, run_until_signalled, set_health
from services.common.infra import connect_redis
from services.common.logs import configure_logging
from services.common.metrics_http import serve_metrics
from services.common.settings import load
from services.common.stores.catalog import CatalogCache, RedisCatalogStore
from services.common.stores.user_state import RedisUserStateStore
from services.ranker.metrics import ranker_metrics
from services.ranker.model_holder import ModelHolder
from services.ranker.server import SERVICE_NAMES, RankerDeps, create_server
from services.ranker.settings import RankerSettings

logger = logging.getLogger(__name__)


async def serve(settings: RankerSettings) -> None:
    metrics = ranker_metrics()
    redis = connect_redis(settings.redis_url)
    executor = ThreadPoolExecutor(settings.executor_threads, thread_name_prefix="ranker-score")
    # Chunks of large encoder batches, for every batch in flight; separate from ``executor``,
    # whose threads wait on them.
    encode_pool = ThreadPoolExecutor(settings.ort_threads * settings.batch_max_in_flight,
                                     thread_name_prefix="ranker-encode")
    holder = ModelHolder(settings.models_dir, executor, metrics, prefer_gpu=settings.prefer_gpu,
                         intra_op_threads=settings.ort_threads,
                         reload_interval_s=settings.reload_interval_s, failed_retry_s=settings.failed_retry_s,
                         scoring=settings.scoring_config(), encode_pool=encode_pool)
    catalog = CatalogCache(RedisCatalogStore(redis), settings.catalog_refresh_s)
    catalog.on_change(holder.on_catalog)
    deps = RankerDeps(holder, RedisUserStateStore(redis), executor, metrics)
    server, port = await create_server(settings, deps)
    tasks: list[asyncio.Task] = []

    async def start() -> None:
        serve_metrics(settings.metrics_port)
        await server.start()
        tasks.append(asyncio.create_task(catalog.run(), name="catalog-refresh"))
        tasks.append(asyncio.create_task(holder.run(), name="model-reload"))
        logger.info("ranker listening on port %d", port, extra={"models_dir": str(settings.models_dir)})

    async def stop() -> None:
        await set_health(deps.health, SERVICE_NAMES, False)
        await server.stop(settings.grace_s)
        if deps.batcher is not None:
            await deps.batcher.close()
        await cancel_tasks(tasks)
        executor.shutdown(wait=True, cancel_futures=True)
        encode_pool.shutdown(wait=True, cancel_futures=True)
        await redis.aclose()
        logger.info("ranker stopped")

    await run_until_signalled(start, stop)


def main() -> None:
    settings = load(RankerSettings)
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))
