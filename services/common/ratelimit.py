"""A token bucket that refuses instead of waiting: the gateway's per-client rate limits.

Why not a library: the maintained ones either wait for capacity (aiolimiter: a gateway
must refuse at once and say how long to wait) or count fixed/moving windows rather than
refilling continuously (limits), and none takes a clock to inject for tests. This is the
textbook bucket in a dozen lines. Every call runs on the event loop, so no lock.
"""
from __future__ import annotations

import time
from typing import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"rate and burst must be positive, got {rate} and {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()

    def try_take(self, n: float = 1.0) -> float:
        """Spend ``n`` tokens and return 0.0, or spend nothing and return the seconds until ``n``
        will be there (``inf`` if ``n`` exceeds the burst: it never will)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if n <= self._tokens + 1e-9:  # float dust from the refill must not refuse a due token
            self._tokens = max(0.0, self._tokens - n)
            return 0.0
        if n > self.burst:
            return float("inf")
        return (n - self._tokens) / self.rate
