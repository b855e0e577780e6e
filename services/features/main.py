"""Composition root of the features worker: ``build`` wires it, ``main`` is the command.

``build(settings)`` is the only place the worker's dependencies are made (Redis and
the stores on it, the model holder and its executor, metrics, health); ``main`` builds
them, creates the faust app on them (``app.create_app``), serves metrics and probes
(``http_endpoint``) and runs faust's worker, which handles SIGTERM/SIGINT: it stops
the agents once their batches are written, commits and closes the clients.
Every test that starts the worker runs this command (``python -m services.features``).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import faust
from prometheus_client import REGISTRY, CollectorRegistry

from services.common.infra import connect_redis
from services.common.logs import configure_logging
from services.common.settings import load, service_command
from services.common.stores.catalog import RedisCatalogStore
from services.common.stores.trending import RedisTrendingStore
from services.common.stores.user_state import RedisUserStateStore
from services.features.app import FeaturesDeps, create_app
from services.features.health import WorkerHealth
from services.features.http_endpoint import HttpEndpoint
from services.features.metrics import FeaturesMetrics
from services.features.models import EncoderHolder
from services.features.settings import FeaturesSettings

logger = logging.getLogger(__name__)


def build(settings: FeaturesSettings, registry: CollectorRegistry = REGISTRY) -> FeaturesDeps:
    """The worker's dependencies; nothing connects yet (Redis connects on first use).
    ``registry``: where the metrics go (the process's default one; a test passes its own)."""
    metrics = FeaturesMetrics(registry)
    redis = connect_redis(settings.redis_url)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="features-model")
    return FeaturesDeps(
        redis=redis,
        users=RedisUserStateStore(redis, history_cap=settings.history_cap, dedup_cap=settings.dedup_window),
        trending=RedisTrendingStore(redis),
        catalog=RedisCatalogStore(redis),
        models=EncoderHolder(settings.models_dir, executor, metrics, prefer_gpu=settings.prefer_gpu,
                           intra_op_threads=settings.encode_threads, failed_retry_s=settings.failed_retry_s),
        metrics=metrics,
        executor=executor,
        health=WorkerHealth(redis),
    )


def main(argv: list[str] | None = None) -> int:
    service_command("shopstream features",
                    "Run the features worker (faust): events from Kafka into user state, trending and "
                    "embeddings in Redis, catalog records into the catalog. Serves /metrics, /healthz/live "
                    "and /healthz/ready on the metrics port.", FeaturesSettings).parse_args(argv)
    settings = load(FeaturesSettings)
    configure_logging(settings.log_level, json_format=settings.log_json)
    deps = build(settings)
    app = create_app(settings, deps)
    http = HttpEndpoint(settings.metrics_port, deps.health, addr=settings.metrics_host)
    logger.info("features worker starting", extra={"app_id": settings.app_id, "metrics_port": http.port,
                                                   "models_dir": str(settings.models_dir)})
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=False)
    try:
        worker.execute_from_commandline()  # handles SIGTERM/SIGINT: stops agents, commits, flushes
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        http.close()
        deps.executor.shutdown(wait=False, cancel_futures=True)
    return 0
