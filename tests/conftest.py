"""Session-wide real servers: an embedded Kafka-compatible broker and an embedded Redis.

Set KAFKA_BOOTSTRAP_SERVERS / REDIS_URL to run the suite against real clusters instead.
"""
from __future__ import annotations

import os

import pytest

from services.stack.embedded import EmbeddedKafka, EmbeddedRedis


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    with EmbeddedKafka() as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    # Durable as in `shopstream up` (AOF, a password in the URL), on a directory of this run.
    with EmbeddedRedis(data_dir=tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
async def redis_client(redis_url):
    """A fresh asyncio client on a flushed database."""
    from services.common.infra import connect_redis

    client = connect_redis(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def restartable_kafka():
    """An embedded broker of the test's own, which it may ``kill()`` and ``start()`` again on
    the same port (the session broker is shared and must stay up)."""
    with EmbeddedKafka() as broker:
        yield broker
