"""The refusing token bucket, on an injected clock."""
import math

import pytest

from services.common.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_allows_the_burst_then_says_how_long_to_wait():
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take() == pytest.approx(0.1)  # one token comes every 1/10 s
    clock.now += 0.05
    assert bucket.try_take() == pytest.approx(0.05)
    clock.now += 0.05
    assert bucket.try_take() == 0.0


def test_refill_stops_at_the_burst():
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    clock.now += 3600
    assert bucket.try_take(3) == 0.0
    assert bucket.try_take(1) > 0


def test_a_refused_take_spends_nothing_and_costs_count():
    clock = Clock()
    bucket = TokenBucket(rate=100, burst=100, clock=clock)
    assert bucket.try_take(60) == 0.0
    assert bucket.try_take(60) == pytest.approx(0.2)  # 20 short at 100/s
    assert bucket.try_take(40) == 0.0  # the refused 60 took nothing


def test_more_than_the_burst_never_fits():
    bucket = TokenBucket(rate=1, burst=5, clock=Clock())
    assert math.isinf(bucket.try_take(6))


@pytest.mark.parametrize("rate, burst", [(0, 1), (1, 0), (-1, 5)])
def test_rate_and_burst_must_be_positive(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)
