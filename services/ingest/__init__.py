"""Ingest: the producer CLI, synthetic data, dataset replay and the event-log export."""
