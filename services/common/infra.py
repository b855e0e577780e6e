"""Where the shared infrastructure lives: Kafka and Redis addresses.

Every service reads the same two unprefixed variables, as the rest of a
Kafka/Redis estate does: ``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL``.
"""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field

from redis.asyncio import Redis, RedisCluster


def kafka_field():
    return Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
        description="comma-separated host:port list",
    )


def redis_field():
    return Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "redis_url"),
        description="redis://[:password@]host:port/db, or redis+cluster://host:port for Redis Cluster",
    )


def redacted(url: str) -> str:
    """``url`` without its password, for logs and messages: ``redis://:***@127.0.0.1:6379/0``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect_redis(url: str) -> Redis | RedisCluster:
    """An asyncio client; ``redis+cluster://`` selects the cluster client.

    All per-user keys carry a ``{u:<id>}`` hash tag (see docs/redis-keys.md),
    so per-user scripts and pipelines stay within one slot on a cluster.
    """
    if url.startswith("redis+cluster://"):
        return RedisCluster.from_url("redis://" + url[len("redis+cluster://"):], decode_responses=False)
    return Redis.from_url(url, decode_responses=False)
