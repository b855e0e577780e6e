"""Kafka topic names: one place, versioned like the protos."""

EVENTS = "shopstream.events.v1"
CATALOG = "shopstream.catalog.v1"
EVENTS_DEAD_LETTER = "shopstream.events.dlq.v1"

# Header on every dead-letter record; value is a short machine-readable reason.
DLQ_REASON_HEADER = "shopstream-dlq-reason"
DLQ_SOURCE_HEADER = "shopstream-dlq-source"  # "<topic>/<partition>/<offset>"
