"""TrackEvents' way to Kafka: the contract's EventProducer, connected on first use.

Why kafka-python in an executor rather than aiokafka's producer on the loop: the event
contract has one producer (services/contract/producer.py: validation, keys by user id,
idempotence with its fallback, recovery after a broker restart) shared with ingest, and a
second, asynchronous implementation of it would be two places to keep in step;
kafka-python's producer is thread-safe and batches in its own I/O thread, so a blocking
send in the gateway's executor costs the event loop nothing but awaiting a future.
aiokafka's producer did answer faster per call in a side-by-side run, but only with
idempotence off (its idempotent mode failed against the embedded broker, where the
contract's producer falls back cleanly), so it would not be the same guarantee.
"""
from __future__ import annotations

from services.contract.producer import EventProducer


class LazyProducer(EventProducer):
    """The contract's producer, connecting on the first send, so a broker outage at start-up
    fails TrackEvents calls (UNAVAILABLE, retryable) instead of the whole gateway.

    What the gateway relies on (services/contract/producer.py): every ``send_events`` ends
    within the producer's timeout (``timeout_s``, else ``max_block_ms``: the gateway passes
    its ``kafka_timeout_s``) with the events acknowledged or an exception, which TrackEvents
    answers with UNAVAILABLE; one connection attempt at a time, and callers that waited
    behind a failed one fail at once; after a broker restart the next call reconnects on a
    fresh kafka-python producer and creates the topics again, without a gateway restart;
    after ``close()`` sends fail with ``ConnectionError``.
    """

    def __init__(self, bootstrap_servers: str, **producer_overrides) -> None:
        super().__init__(bootstrap_servers, connect=False, **producer_overrides)
