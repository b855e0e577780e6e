"""The ranker: scores the catalog for one user with the live model (internal gRPC service)."""
