"""Periodic work: trending decay, model hot-reload, consumer-lag metric."""
from __future__ import annotations

import logging

import faust

from services.common.gc_tuning import freeze_startup_heap
from services.features.settings import FeaturesSettings

logger = logging.getLogger(__name__)


def register_timers(app: faust.App, settings: FeaturesSettings, deps) -> None:
    metrics = deps.metrics

    @app.task
    async def load_model_on_start():
        await deps.models.reload_if_changed()
        freeze_startup_heap()

    @app.timer(settings.model_reload_interval_s, name="reload_model")
    async def reload_model():
        await deps.models.reload_if_changed()

    @app.timer(settings.trending_decay_interval_s, name="decay_trending")
    async def decay_trending():
        try:
            if await deps.trending.decay(settings.trending_decay_interval_s, settings.trending_half_life_s):
                metrics.trending_decays.inc()
        except Exception:  # a Redis blip skips one decay; the next interval catches up
            logger.warning("trending decay failed", exc_info=True)

    @app.timer(settings.lag_interval_s, name="measure_consumer_lag")
    async def measure_consumer_lag():
        try:
            consumer = app.consumer
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                position = await consumer.position(tp)
                if highwater is None or position is None:
                    continue
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))
        except Exception:  # during a rebalance the consumer may have no assignment yet
            logger.debug("consumer lag not measured", exc_info=True)
