"""The stream processors: events into user state, catalog records into the catalog."""
from __future__ import annotations

import faust

from services.features.processing import CatalogBatchProcessor, EventBatchProcessor, SourceRecord
from services.features.settings import FeaturesSettings
from services.features.topics import FeatureTopics


def _record(event: faust.EventT) -> SourceRecord:
    msg = event.message
    return SourceRecord(topic=msg.topic, partition=msg.partition, offset=msg.offset,
                        timestamp=msg.timestamp, key=msg.key, value=msg.value)


def register_agents(app: faust.App, topics: FeatureTopics, settings: FeaturesSettings,
                    events: EventBatchProcessor, catalog: CatalogBatchProcessor) -> None:
    within = settings.batch_window_ms / 1000.0

    @app.agent(topics.events, name="process_events")
    async def process_events(stream):
        # take_events acks a batch only after this body finished with it: at-least-once.
        async for batch in stream.take_events(settings.batch_size, within=within):
            await events.process([_record(e) for e in batch])

    @app.agent(topics.catalog, name="apply_catalog_updates")
    async def apply_catalog_updates(stream):
        async for batch in stream.take_events(settings.batch_size, within=within):
            await catalog.process([_record(e) for e in batch])
