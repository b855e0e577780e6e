"""The stream processors: events into user state, catalog records into the catalog."""
from __future__ import annotations

import faust

from services.features.batches import take_message_batches
from services.features.processing import CatalogBatchProcessor, EventBatchProcessor
from services.features.settings import FeaturesSettings
from services.features.topics import FeatureTopics


def register_agents(app: faust.App, topics: FeatureTopics, settings: FeaturesSettings,
                    events: EventBatchProcessor, catalog: CatalogBatchProcessor) -> None:
    within = settings.batch_window_ms / 1000.0

    @app.agent(topics.events, name="process_events")
    async def process_events(stream):
        # A batch is acked only after this body finished with it: at-least-once.
        # faust's Message already has topic/partition/offset/timestamp/key/value: no copy per event.
        async for batch in take_message_batches(app, stream, settings.batch_size, within):
            await events.process(batch)

    @app.agent(topics.catalog, name="apply_catalog_updates")
    async def apply_catalog_updates(stream):
        async for batch in take_message_batches(app, stream, settings.batch_size, within):
            await catalog.process(batch)
