"""Composition root of the ranker: ``build`` wires it, ``running`` runs it, ``main`` is the command.

``build(settings)`` is the only place the ranker's dependencies are made (Redis, the
user state store, the catalog cache, the model holder with its scoring config and
encode pool, the micro-batcher, executors, metrics). ``running(settings, deps)``
starts the server, the catalog refresher and the model reloader and stops them all,
in reverse order, on exit; ``main`` and every test that starts the ranker go through it.
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
from services.common.stores.user_state import RedisUserStateStore
from services.ranker.metrics import ranker_metrics
from services.ranker.model_holder import ModelHolder
from services.ranker.server import SERVICE_NAMES, RankerDeps, create_server, make_batcher
from services.ranker.settings import RankerSettings

logger = logging.getLogger(__name__)


def build(settings: RankerSettings) -> RankerDeps:
    """The ranker's dependencies; nothing connects or loads yet. Call it on the event loop
    that will run the ranker."""
    metrics = ranker_metrics()
    redis = connect_redis(settings.redis_url)
    executor = ThreadPoolExecutor(settings.executor_threads, thread_name_prefix="ranker-score")
    # Chunks of large encoder batches, for every batch in flight; separate from ``executor``,
    # whose threads wait on them.
    encode_pool = ThreadPoolExecutor(settings.ort_threads * settings.batch_max_in_flight,
                                     thread_name_prefix="ranker-encode")
    holder = ModelHolder(settings.models_dir, executor, metrics, scoring=settings.scoring_config(),
                         reload_interval_s=settings.reload_interval_s, failed_retry_s=settings.failed_retry_s,
                         encode_pool=encode_pool, max_models=settings.max_models)
    catalog = CatalogCache(RedisCatalogStore(redis), settings.catalog_refresh_s)
    catalog.on_change(holder.on_catalog)
    return RankerDeps(redis=redis, holder=holder, catalog=catalog,
                      user_states=RedisUserStateStore(redis),
                      batcher=make_batcher(settings, executor, metrics), executor=executor,
                      encode_pool=encode_pool, metrics=metrics)


@contextlib.asynccontextmanager
async def running(settings: RankerSettings, deps: RankerDeps | None = None) -> AsyncIterator[RunningServer[RankerDeps]]:
    """The ranker serving on ``settings.addr`` (NOT_SERVING until a model is loaded and warmed),
    with its catalog refresher and model reloader; stopped and closed, in reverse order, on exit.

    ``deps`` defaults to ``build(settings)``; either way ``running`` owns them and closes them.
    """
    deps = build(settings) if deps is None else deps
    async with contextlib.AsyncExitStack() as stack:
        # Pushed in order of start, so that exit undoes them from the last one back.
        stack.push_async_callback(deps.redis.aclose)
        stack.callback(deps.encode_pool.shutdown, wait=True, cancel_futures=True)
        stack.callback(deps.executor.shutdown, wait=True, cancel_futures=True)
        stack.push_async_callback(deps.batcher.close)
        built = await create_server(settings, deps)
        await built.start(stack, SERVICE_NAMES, settings.grace_s)
        tasks = [asyncio.create_task(deps.catalog.run(), name="catalog-refresh"),
                 asyncio.create_task(deps.holder.run(), name="model-reload")]
        stack.push_async_callback(cancel_tasks, tasks)
        logger.info("ranker listening on port %d", built.port,
                    extra={"models_dir": str(settings.models_dir), "mtls": settings.tls_cert_file is not None})
        yield RunningServer.of(built, deps)
        logger.info("ranker stopping")
    logger.info("ranker stopped")


def main(argv: list[str] | None = None) -> int:
    return run_service(argv, prog="shopstream ranker", settings_cls=RankerSettings, running=running,
                       description="Run the ranker gRPC server (RankerService, grpc.health.v1, reflection): the live model "
                       "bundle (LATEST in the models directory) and the candidates listed in CANDIDATES score the "
                       "whole catalog, hot-reloaded when either file changes.")
