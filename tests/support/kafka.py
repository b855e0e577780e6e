"""Reading a topic back in tests (aiokafka: kafka-python's consumer groups don't work on tansu)."""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition


async def read_topic_async(bootstrap: str, topic: str, timeout: float = 5.0) -> list:
    """Every record currently in the topic, all partitions, from the beginning."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = [TopicPartition(topic, p) for p in sorted(consumer._client.cluster.partitions_for_topic(topic) or ())]
        if not parts:
            return []
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        records = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            positions = [await consumer.position(tp) for tp in parts]
            if all(pos >= end[tp] for pos, tp in zip(positions, parts)):
                break
            for recs in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


def read_topic(bootstrap: str, topic: str, timeout: float = 5.0) -> list:
    return asyncio.run(read_topic_async(bootstrap, topic, timeout))
