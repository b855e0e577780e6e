"""Kafka topic names: one place, versioned like the protos."""

EVENTS = "shopstream.events.v1"
CATALOG = "shopstream.catalog.v1"
EVENTS_DEAD_LETTER = "shopstream.events.dlq.v1"
# Served lists (shopstream.events.v1.Impression), keyed by user_id like EVENTS.
IMPRESSIONS = "shopstream.impressions.v1"

# Header on every dead-letter record; value is a short machine-readable reason.
DLQ_REASON_HEADER = "shopstream-dlq-reason"
DLQ_SOURCE_HEADER = "shopstream-dlq-source"  # "<topic>/<partition>/<offset>"
# Only when the dead-letter record had to be cut to fit: the original size in bytes.
DLQ_VALUE_BYTES_HEADER = "shopstream-dlq-original-value-bytes"
DLQ_KEY_BYTES_HEADER = "shopstream-dlq-original-key-bytes"
