"""The features service: where events become Redis writes (user state, trending, embeddings)."""
