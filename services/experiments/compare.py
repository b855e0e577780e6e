"""How a shadow's list compares with the one served: overlap@k and rank correlations.

Both lists are ranked item ids. Overlap@k is the share of the served top k that the
shadow also has in its top k. The correlations (Spearman's rho, Kendall's tau; the lists
have no ties) compare the order of the items both lists hold; with fewer than two such items
there is no order to compare and they are None.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Comparison:
    overlap: float  # in [0, 1]
    common: int
    spearman: float | None  # in [-1, 1]
    kendall: float | None  # in [-1, 1]


def overlap_at_k(served: Sequence[str], shadow: Sequence[str], k: int) -> float:
    if k <= 0:
        return 0.0
    top = set(served[:k])
    return len(top.intersection(shadow[:k])) / k


def _common_ranks(served: Sequence[str], shadow: Sequence[str]) -> tuple[list[int], list[int]]:
    """Ranks (0-based, within the common items) in each list of the items both hold."""
    other = set(shadow)
    common = [i for i in dict.fromkeys(served) if i in other]
    in_common = set(common)
    order_b = [i for i in dict.fromkeys(shadow) if i in in_common]
    rank_b = {item: n for n, item in enumerate(order_b)}
    return list(range(len(common))), [rank_b[i] for i in common]


def spearman(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Spearman's rho of two rankings of the same n items (no ties): 1 - 6 sum d^2 / (n(n^2-1))."""
    n = len(a)
    if n < 2:
        return None
    d2 = sum((x - y) ** 2 for x, y in zip(a, b))
    return 1.0 - 6.0 * d2 / (n * (n * n - 1))


def kendall(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Kendall's tau of two rankings of the same n items (no ties): (concordant - discordant) / pairs."""
    n = len(a)
    if n < 2:
        return None
    score = 0
    for i in range(n):
        for j in range(i + 1, n):
            s = (a[i] - a[j]) * (b[i] - b[j])
            score += 1 if s > 0 else -1
    return score / (n * (n - 1) / 2)


def compare(served: Sequence[str], shadow: Sequence[str], k: int | None = None) -> Comparison:
    """``served`` and ``shadow`` (ranked item ids) compared at ``k`` (default: len(served))."""
    k = len(served) if k is None else k
    a, b = _common_ranks(served[:k], shadow[:k])
    return Comparison(overlap_at_k(served, shadow, k), len(a), spearman(a, b), kendall(a, b))
