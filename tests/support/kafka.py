"""Reading a topic back in tests (aiokafka: kafka-python's consumer groups don't work on tansu)."""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition


async def _read(bootstrap: str, topic: str, timeout_ms: int):
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out = []
        while any((await consumer.position(tp)) < end[tp] for tp in tps):
            batch = await consumer.getmany(timeout_ms=timeout_ms)
            if not batch:
                break
            for records in batch.values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


def read_topic(bootstrap: str, topic: str, timeout_ms: int = 1000):
    """All records currently in the topic (every partition, from the beginning)."""
    return asyncio.run(_read(bootstrap, topic, timeout_ms))
