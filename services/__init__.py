"""shopstream services: ingest, features, ranker, gateway and training."""
