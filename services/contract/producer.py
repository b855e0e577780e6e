"""The one way events and catalog records get onto Kafka.

Synchronous (kafka-python); async callers such as the gateway run it in an
executor. Events are keyed by user id so that each user's events land in one
partition, in order; catalog records are keyed by item id.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnsupportedVersionError
from shopstream.catalog.v1 import catalog_pb2
from shopstream.events.v1 import events_pb2

from services.contract import topics
from services.contract.validation import validate_catalog_item, validate_event

logger = logging.getLogger(__name__)

_DEFAULTS = {
    "acks": "all",
    "retries": 5,
    "linger_ms": 5,
    "enable_idempotence": True,  # checked against the embedded broker (tansu) and Kafka
    "request_timeout_ms": 15_000,
}


def _split(bootstrap_servers: str) -> list[str]:
    return [s.strip() for s in bootstrap_servers.split(",") if s.strip()]


class EventProducer:
    """Validating producer for the events and catalog topics."""

    def __init__(self, bootstrap_servers: str, **producer_overrides) -> None:
        config = {**_DEFAULTS, **producer_overrides, "bootstrap_servers": _split(bootstrap_servers)}
        if not config["enable_idempotence"]:
            config.setdefault("max_in_flight_requests_per_connection", 1)  # retries must not reorder
        try:
            self._producer = KafkaProducer(**config)
        except UnsupportedVersionError:
            # Brokers without idempotent producers: keep ordering under retries another way.
            logger.warning("broker does not support idempotent producers; sending one request at a time")
            config.update(enable_idempotence=False, max_in_flight_requests_per_connection=1)
            self._producer = KafkaProducer(**config)

    def send_events(self, events: Sequence[events_pb2.Event], wait: bool = True) -> int:
        """Validate every event, then publish them all; raises InvalidEvent before sending any if one is bad.

        With ``wait`` this blocks until the broker acknowledged every record and
        raises the first delivery error; returns the number of events sent.
        """
        for ev in events:
            validate_event(ev)
        futures = [
            self._producer.send(topics.EVENTS, key=ev.user_id.encode(), value=ev.SerializeToString())
            for ev in events
        ]
        if wait:
            self._wait(futures)
        return len(futures)

    def send_catalog(self, items: Sequence[catalog_pb2.CatalogItem], wait: bool = True) -> int:
        """Validate and publish catalog records keyed by item id; same contract as send_events."""
        for item in items:
            validate_catalog_item(item)
        futures = [
            self._producer.send(topics.CATALOG, key=item.item_id.encode(), value=item.SerializeToString())
            for item in items
        ]
        if wait:
            self._wait(futures)
        return len(futures)

    def send_raw(self, topic: str, key: bytes | None, value: bytes, headers=None, wait: bool = True):
        """Publish bytes as they are, unvalidated (tests, kcat-like tools); returns the record metadata."""
        future = self._producer.send(topic, key=key, value=value, headers=headers)
        if wait:
            self._producer.flush()
            return future.get(timeout=30)
        return future

    def _wait(self, futures) -> None:
        self._producer.flush()
        for f in futures:
            f.get(timeout=30)  # raises the KafkaError of a failed record

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        self._producer.close(timeout)

    def __enter__(self) -> "EventProducer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ensure_topics(bootstrap_servers: str, partitions: int, replication_factor: int = 1) -> list[str]:
    """Create the events, catalog and dead-letter topics when missing; returns the ones created."""
    admin = KafkaAdminClient(bootstrap_servers=_split(bootstrap_servers), client_id="shopstream-ingest-admin")
    created = []
    try:
        for name in (topics.EVENTS, topics.CATALOG, topics.EVENTS_DEAD_LETTER):
            try:
                admin.create_topics([NewTopic(name, partitions, replication_factor)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
            except KafkaError as exc:
                if "already exists" not in str(exc).lower():
                    raise
    finally:
        admin.close()
    if created:
        logger.info("created topics %s with %d partitions", created, partitions)
    return created
