"""Ingest: the event contract (validation), the Kafka producer, synthetic data and replay."""
