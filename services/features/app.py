"""The faust app of the features worker, built from settings and dependencies (no globals)."""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import faust

from services.common.stores.catalog import CatalogStore
from services.common.stores.recovery_marks import RedisRecoveryMarks
from services.common.stores.trending import TrendingStore
from services.common.stores.user_state import UserStateStore
from services.features.agents import register_agents
from services.features.attribution_agent import register_attribution
from services.features.embeddings import EmbeddingRefresher
from services.features.health import WorkerHealth
from services.features.metrics import FeaturesMetrics
from services.features.models import EncoderHolder
from services.features.processing import CatalogBatchProcessor, EventBatchProcessor
from services.features.recovery import create_recovery
from services.features.settings import FeaturesSettings
from services.features.timers import register_timers
from services.features.topics import TopicDeadLetters, define_topics
from services.features.transport import FetchWaitTransport

logger = logging.getLogger(__name__)


@dataclass
class FeaturesDeps:
    redis: Any
    users: UserStateStore
    trending: TrendingStore
    catalog: CatalogStore
    models: EncoderHolder
    metrics: FeaturesMetrics
    executor: Executor  # model loading and encoding, off the event loop
    health: WorkerHealth


def create_app(settings: FeaturesSettings, deps: FeaturesDeps) -> faust.App:
    brokers = [f"kafka://{h.strip()}" for h in settings.kafka_bootstrap_servers.split(",") if h.strip()]
    settings.datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=brokers,
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        datadir=str(settings.datadir),
        topic_partitions=settings.topic_partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_max_poll_records=settings.max_poll_records,
        consumer_max_fetch_size=settings.max_fetch_bytes,
        stream_buffer_maxsize=settings.stream_buffer,
    )
    # Before anything asks for it (defining topics does): the consumer's transport, see transport.py.
    app.transport = FetchWaitTransport(app.conf.broker_consumer, app, fetch_max_wait_ms=settings.fetch_max_wait_ms)
    topics = define_topics(app)
    dead_letters = TopicDeadLetters(topics.dead_letter)
    embeddings = EmbeddingRefresher(deps.users, deps.models, deps.executor, deps.metrics,
                                    min_interval_s=settings.embedding_min_interval_ms / 1000.0,
                                    max_duty=settings.embedding_max_duty)
    events = EventBatchProcessor(deps.users, deps.trending, embeddings, dead_letters, deps.metrics)
    catalog = CatalogBatchProcessor(deps.catalog, dead_letters, deps.metrics)
    # Redis lost data anyway (FLUSHALL, no persistence, a promoted replica): replay the log, see recovery.py.
    recovery = create_recovery(settings, deps, topics, embeddings, RedisRecoveryMarks(deps.redis))
    register_agents(app, topics, settings, recovery.gated(events), recovery.gated(catalog), deps.health,
                    deps.metrics)
    recovery.register(app)
    register_attribution(app, settings, deps.redis, deps.health, deps.metrics)  # attribution_agent.py
    register_timers(app, settings, deps)

    @app.task
    async def watch_health():  # the probes run their checks on this loop, against this consumer
        deps.health.bind(asyncio.get_running_loop(), app.consumer.assignment)

    @app.on_partitions_assigned.connect
    async def count_assigned(app, assigned, **kwargs):  # readiness: the worker consumes once assigned
        deps.metrics.assigned_partitions.set(len(assigned))

    @app.on_before_shutdown.connect
    async def close_clients(app, **kwargs):  # the consumer has stopped; nothing writes any more
        try:  # embeddings already queued are worth a moment; a stale one is re-encoded by the ranker
            await asyncio.wait_for(embeddings.flush(), settings.shutdown_flush_s)
        except Exception:
            logger.warning("embedding refresh not flushed at shutdown", exc_info=True)
        try:  # the marks of what was written, so the next owner does not replay it
            await recovery.close()
        except Exception:
            logger.warning("recovery marks not closed at shutdown", exc_info=True)
        await deps.redis.aclose()

    return app
