"""TrackEvents' way to Kafka: the contract's EventProducer, connected on first use.

Why kafka-python in an executor rather than aiokafka's producer on the loop: the event
contract has one producer (services/contract/producer.py: validation, keys by user id,
idempotence with its fallback) shared with ingest, and a second, asynchronous
implementation of it would be two places to keep in step; kafka-python's producer is
thread-safe and batches in its own I/O thread, so a blocking send in the gateway's
executor costs the event loop nothing but awaiting a future. aiokafka's producer did
answer faster per call in a side-by-side run, but only with idempotence off (its
idempotent mode failed against the embedded broker, where the contract's producer falls
back cleanly), so it would not be the same guarantee.
"""
from __future__ import annotations

import threading
from typing import Sequence

from shopstream.events.v1 import events_pb2

from services.contract.producer import EventProducer


class LazyProducer:
    """Connects on first send, so a broker outage at start-up fails TrackEvents calls
    (UNAVAILABLE, retryable) instead of the whole gateway; the connection is tried again
    on a later call after a failure.

    One connection attempt at a time: callers that waited behind a failed attempt fail
    at once instead of each waiting out the bootstrap timeout in turn.
    """

    def __init__(self, bootstrap_servers: str, **producer_overrides) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._overrides = producer_overrides
        self._producer: EventProducer | None = None
        self._lock = threading.Lock()
        self._failed_attempts = 0
        self._closed = False

    def send_events(self, events: Sequence[events_pb2.Event], wait: bool = True) -> int:
        return self._connected().send_events(events, wait=wait)

    def _connected(self) -> EventProducer:
        failed_before = self._failed_attempts
        with self._lock:
            if self._closed:
                raise ConnectionError("the event producer is closed")
            if self._producer is not None:
                return self._producer
            if self._failed_attempts != failed_before:
                raise ConnectionError("Kafka is unreachable (the connection attempt just before this one failed)")
            try:
                self._producer = EventProducer(self._bootstrap_servers, **self._overrides)
            except Exception:
                self._failed_attempts += 1
                raise
            return self._producer

    def close(self) -> None:
        with self._lock:
            producer, self._producer, self._closed = self._producer, None, True
        if producer is not None:
            producer.close()
