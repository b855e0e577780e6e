"""The report's statistics against published values and hand computations."""
import math

import pytest

from services.experiments.stats import (Mean, histogram_quantile, mean_interval, normal_sf, two_proportion_z,
                                        welch_z, wilson)


def test_normal_tail():
    assert normal_sf(1.959963984540054) == pytest.approx(0.025, abs=1e-12)
    assert normal_sf(0.0) == 0.5


@pytest.mark.parametrize("successes, trials, low, high", [
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_newcombe(successes, trials, low, high):
    interval = wilson(successes, trials)
    assert interval.low == pytest.approx(low, abs=6e-5)
    assert interval.high == pytest.approx(high, abs=6e-5)


def test_wilson_without_trials_is_everything():
    assert (wilson(0, 0).low, wilson(0, 0).high) == (0.0, 1.0)


def test_two_proportion_z_by_hand():
    # 50/1000 against 80/1000: pooled 0.065, se = sqrt(0.065 * 0.935 * 2 / 1000)
    t = two_proportion_z(50, 1000, 80, 1000)
    se = math.sqrt(0.065 * 0.935 * 0.002)
    assert t.difference == pytest.approx(0.03)
    assert t.z == pytest.approx(0.03 / se)
    assert t.z == pytest.approx(2.7211, abs=1e-4)
    assert t.p_value == pytest.approx(0.006507, abs=1e-6)
    assert two_proportion_z(80, 1000, 50, 1000).z == pytest.approx(-t.z)  # the sign says which is better


def test_two_proportion_z_degenerate_cases():
    assert two_proportion_z(0, 0, 5, 10).p_value == 1.0
    assert two_proportion_z(0, 10, 0, 10).p_value == 1.0  # no variance: no evidence
    assert two_proportion_z(10, 10, 10, 10).p_value == 1.0


def test_mean_interval_and_welch_by_hand():
    a_values, b_values = [0, 0, 10, 0, 5, 0, 0, 20], [0, 15, 10, 0, 25, 0, 30, 20]
    a = Mean(len(a_values), sum(a_values), sum(v * v for v in a_values))
    b = Mean(len(b_values), sum(b_values), sum(v * v for v in b_values))
    mean_a = sum(a_values) / 8
    var_a = sum((v - mean_a) ** 2 for v in a_values) / 7
    assert a.value == pytest.approx(mean_a) and a.variance == pytest.approx(var_a)
    interval = mean_interval(a)
    assert interval.low == pytest.approx(mean_a - 1.959964 * math.sqrt(var_a / 8), abs=1e-5)
    mean_b = sum(b_values) / 8
    var_b = sum((v - mean_b) ** 2 for v in b_values) / 7
    test = welch_z(a, b)
    assert test.z == pytest.approx((mean_b - mean_a) / math.sqrt(var_a / 8 + var_b / 8))
    assert test.p_value == pytest.approx(2 * normal_sf(abs(test.z)))


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(0.01, 50.0), (0.05, 90.0), (0.1, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.05 + 0.05 * 9 / 10)
    assert histogram_quantile(0.99, [(0.01, 0.0), (math.inf, 10.0)]) == 0.01  # in +Inf: the last bound
    assert histogram_quantile(0.99, [(0.01, 0.0), (math.inf, 0.0)]) is None
