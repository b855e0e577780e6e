"""State in Redis, behind small interfaces. Key layout: docs/redis-keys.md."""
