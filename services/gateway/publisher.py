"""TrackEvents' way to Kafka: the ingest EventProducer, connected on first use."""
from __future__ import annotations

import threading
from typing import Sequence

from shopstream.events.v1 import events_pb2

from services.contract.producer import EventProducer


class LazyProducer:
    """Connects on first send, so a broker outage at start-up fails TrackEvents calls
    (UNAVAILABLE, retryable) instead of the whole gateway; retries the connection
    on the next call after a failure."""

    def __init__(self, bootstrap_servers: str, **producer_overrides) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._overrides = producer_overrides
        self._producer: EventProducer | None = None
        self._lock = threading.Lock()

    def send_events(self, events: Sequence[events_pb2.Event], wait: bool = True) -> int:
        with self._lock:
            if self._producer is None:
                self._producer = EventProducer(self._bootstrap_servers, **self._overrides)
        return self._producer.send_events(events, wait=wait)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close()
                self._producer = None
