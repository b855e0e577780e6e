"""Composition root of the features worker: settings, logging, clients, metrics, faust worker."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import faust

from services.common.infra import connect_redis
from services.common.logs import configure_logging
from services.common.metrics_http import serve_metrics
from services.common.settings import load
from services.common.stores.catalog import RedisCatalogStore
from services.common.stores.trending import RedisTrendingStore
from services.common.stores.user_state import RedisUserStateStore
from services.features.app import FeaturesDeps, create_app
from services.features.metrics import FeaturesMetrics
from services.features.models import ModelHolder
from services.features.settings import FeaturesSettings

logger = logging.getLogger(__name__)


def build_deps(settings: FeaturesSettings, metrics: FeaturesMetrics) -> FeaturesDeps:
    redis = connect_redis(settings.redis_url)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="features-model")
    return FeaturesDeps(
        redis=redis,
        users=RedisUserStateStore(redis, history_cap=settings.history_cap, dedup_cap=settings.dedup_window),
        trending=RedisTrendingStore(redis),
        catalog=RedisCatalogStore(redis),
        models=ModelHolder(settings.models_dir, executor, metrics, prefer_gpu=settings.prefer_gpu,
                           intra_op_threads=settings.encode_threads, failed_retry_s=settings.failed_retry_s),
        metrics=metrics,
        executor=executor,
    )


def main(argv: list[str] | None = None) -> int:
    settings = load(FeaturesSettings)
    configure_logging(settings.log_level, json_format=settings.log_json)
    deps = build_deps(settings, FeaturesMetrics())
    app = create_app(settings, deps)
    port = serve_metrics(settings.metrics_port)
    logger.info("features worker starting", extra={"app_id": settings.app_id, "metrics_port": port,
                                                   "models_dir": str(settings.models_dir)})
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=False)
    try:
        worker.execute_from_commandline()  # handles SIGTERM/SIGINT: stops agents, commits, flushes
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        deps.executor.shutdown(wait=False, cancel_futures=True)
    return 0
