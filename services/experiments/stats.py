"""The statistics of an experiment report: pure functions, no I/O.

* proportions (CTR, add-to-cart rate, conversion rate: lists with at least one such event
  over lists served): the Wilson score interval, and the two-proportion z-test with the
  pooled standard error against the control;
* a mean per served list (revenue per impression): the normal (central limit) interval
  from the sum and the sum of squares, and Welch's z-test (unpooled) against the control.

Assumptions (docs/experiments.md, "Statistics and their assumptions"): served lists are
independent trials (a user's lists are not: intervals are somewhat too narrow for
users with many lists), samples large enough for the normal approximation, one test per
metric with no correction for looking repeatedly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class Test:
    """Treatment against control: the difference, its z statistic and two-sided p-value."""

    difference: float
    z: float
    p_value: float


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def wilson(successes: float, trials: float, z: float = Z95) -> Interval:
    """Wilson score interval of a proportion; (0, 1) without trials."""
    if trials <= 0:
        return Interval(0.0, 1.0)
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def two_proportion_z(successes_a: float, trials_a: float, successes_b: float, trials_b: float) -> Test:
    """B (treatment) against A (control): pooled two-proportion z-test, two-sided. With no
    trials on a side or no variance at all (all or nothing on both sides): z 0, p 1."""
    if trials_a <= 0 or trials_b <= 0:
        return Test(0.0, 0.0, 1.0)
    pa, pb = successes_a / trials_a, successes_b / trials_b
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    if se == 0:
        return Test(pb - pa, 0.0, 1.0)
    z = (pb - pa) / se
    return Test(pb - pa, z, 2 * normal_sf(abs(z)))


@dataclass(frozen=True)
class Mean:
    """A mean per trial from its sum and sum of squares (each trial's value, squared)."""

    n: float
    total: float
    total_sq: float

    @property
    def value(self) -> float:
        return self.total / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        """Sample variance (n - 1); 0 below two trials."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))

    @property
    def standard_error(self) -> float:
        return math.sqrt(self.variance / self.n) if self.n > 0 else 0.0


def mean_interval(mean: Mean, z: float = Z95) -> Interval:
    """Normal-approximation interval of the mean (the CLT; no bootstrap: only sums are kept)."""
    half = z * mean.standard_error
    return Interval(mean.value - half, mean.value + half)


def welch_z(a: Mean, b: Mean) -> Test:
    """B against A: difference of means over the unpooled standard error, two-sided normal p."""
    if a.n <= 0 or b.n <= 0:
        return Test(0.0, 0.0, 1.0)
    se = math.sqrt(a.standard_error ** 2 + b.standard_error ** 2)
    diff = b.value - a.value
    if se == 0:
        return Test(diff, 0.0, 1.0)
    z = diff / se
    return Test(diff, z, 2 * normal_sf(abs(z)))


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a Prometheus histogram as ``histogram_quantile`` computes it:
    ``buckets`` are (upper bound, cumulative count) sorted by bound, ``+Inf`` last; linear
    interpolation inside the bucket; the highest finite bound if it falls in ``+Inf``.
    None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound
