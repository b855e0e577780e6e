"""The attribution agent: one faust agent on the events and impressions topics together.

Both topics are keyed by user id with the same partition count, and one agent subscribes
to both, so faust's assignor gives partition *n* of both to the same worker
(co-partitioned): each user's lists and events meet in one worker, which alone writes that
user's join state. The agent shares the events topic with ``process_events``; faust
commits an event only when both agents acked it. Batching and acking are the features
agents' (``agents.write_batches``): a record is acked after its Redis write.
"""
from __future__ import annotations

import faust

from services.contract import topics
from services.features.agents import write_batches
from services.features.attribution import AttributionProcessor
from services.features.attribution_store import AttributionConfig, RedisAttributionStore
from services.features.health import WorkerHealth
from services.features.metrics import FeaturesMetrics
from services.features.settings import FeaturesSettings
from services.features.topics import RawBytesSchema


def attribution_config(settings: FeaturesSettings) -> AttributionConfig:
    return AttributionConfig(window_ms=int(settings.attribution_window_s * 1000),
                             bucket_ms=settings.attribution_bucket_s * 1000,
                             max_lists=settings.attribution_max_lists,
                             dedup_cap=settings.dedup_window)


def register_attribution(app: faust.App, settings: FeaturesSettings, redis, health: WorkerHealth,
                         metrics: FeaturesMetrics) -> None:
    """The ``attribute_events`` agent, unless ``SHOPSTREAM_FEATURES_ATTRIBUTION_ENABLED=false``."""
    if not settings.attribution_enabled:
        return
    processor = AttributionProcessor(RedisAttributionStore(redis, attribution_config(settings)), metrics)
    schema = RawBytesSchema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    source = app.topic(topics.EVENTS, topics.IMPRESSIONS, schema=schema)
    within = settings.attribution_batch_window_ms / 1000.0

    @app.agent(source, name="attribute_events")
    async def attribute_events(stream):
        await write_batches("attribute_events", stream, processor.process, settings.batch_size, within, health,
                            metrics)
