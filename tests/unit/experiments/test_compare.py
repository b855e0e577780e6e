"""Shadow comparison: overlap@k and rank correlations of two ranked lists."""
from __future__ import annotations

import pytest

from services.experiments.compare import compare, kendall, overlap_at_k, spearman


def test_identical_lists():
    c = compare(["a", "b", "c", "d"], ["a", "b", "c", "d"])
    assert (c.overlap, c.common, c.spearman, c.kendall) == (1.0, 4, 1.0, 1.0)


def test_reversed_lists():
    c = compare(["a", "b", "c", "d"], ["d", "c", "b", "a"])
    assert (c.overlap, c.spearman, c.kendall) == (1.0, -1.0, -1.0)


def test_partial_overlap_correlates_the_common_items_only():
    c = compare(["a", "b", "c", "d"], ["b", "x", "a", "y"])
    assert c.overlap == 0.5 and c.common == 2
    assert c.spearman == -1.0 and c.kendall == -1.0  # a before b when served, b before a in the shadow


def test_no_order_to_compare():
    c = compare(["a", "b"], ["a", "z"])
    assert c.overlap == 0.5 and c.spearman is None and c.kendall is None
    assert compare(["a"], ["b"]).overlap == 0.0


def test_overlap_at_k_uses_the_top_k_of_each():
    assert overlap_at_k(["a", "b", "c"], ["c", "b", "a"], 2) == 0.5
    assert overlap_at_k(["a"], ["a"], 0) == 0.0


def test_known_values():
    a, b = [0, 1, 2, 3, 4], [1, 0, 2, 4, 3]  # two adjacent swaps
    assert spearman(a, b) == pytest.approx(1 - 6 * 4 / (5 * 24))
    assert kendall(a, b) == pytest.approx((8 - 2) / 10)
