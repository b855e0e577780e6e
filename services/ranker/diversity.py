"""Re-ranking for variety: maximal marginal relevance over the model's item vectors and a
per-category cap. With weight 0 and no cap the model's order is kept exactly.

MMR picks, one at a time, the candidate maximising
``(1 - weight) * relevance - weight * max cosine to the items already picked``, with relevance
the candidates' scores scaled to [0, 1]. The cap skips a candidate whose category already has
``cap`` items; when that would leave the row short of ``k`` the best skipped ones fill it (a row
of ``k`` items matters more than the cap; ``capped`` says whether that happened).
"""
from __future__ import annotations

import numpy as np


def rerank(candidates: np.ndarray, scores: np.ndarray, k: int, *, unit_vectors: np.ndarray,
           weight: float = 0.0, categories: np.ndarray | None = None, cap: int = 0) -> tuple[np.ndarray, bool]:
    """``k`` of ``candidates`` (vocabulary indices, best first, with their ``scores``) in the
    re-ranked order, and whether the cap held. ``categories``: int codes per vocabulary index."""
    if k <= 0 or not len(candidates):
        return candidates[:0], True
    if weight <= 0 and cap <= 0:
        return candidates[:k], True
    use_cap = cap > 0 and categories is not None
    if weight <= 0:  # the cap alone: one pass in score order
        return _cap_only(candidates, k, categories[candidates], cap) if use_cap else (candidates[:k], True)
    relevance = scores.astype(np.float64)
    span = relevance.max() - relevance.min()
    relevance = (relevance - relevance.min()) / span if span > 0 else np.ones_like(relevance)
    vecs = unit_vectors[candidates]
    closest = np.zeros(len(candidates))  # max cosine to anything picked so far (0 before the first)
    gain = (1 - weight) * relevance
    cats = categories[candidates] + 1 if use_cap else None  # +1: unknown (-1) becomes a category of its own
    counts = np.zeros(int(cats.max()) + 1, dtype=np.int64) if use_cap else None
    picked: list[int] = []
    while len(picked) < k:
        best = int(np.argmax(gain))
        if not np.isfinite(gain[best]):
            break
        picked.append(best)
        closest = np.maximum(closest, vecs @ vecs[best])
        gain = (1 - weight) * relevance - weight * closest
        gain[picked] = -np.inf
        if use_cap:
            counts[cats[best]] += 1
            gain[counts[cats] >= cap] = -np.inf
    held = len(picked) >= k
    if not held:  # the cap left the row short: the best skipped candidates fill it
        taken = set(picked)
        picked += [i for i in range(len(candidates)) if i not in taken][:k - len(picked)]
    return candidates[np.array(picked, dtype=np.int64)], held


def _cap_only(candidates: np.ndarray, k: int, cats: np.ndarray, cap: int) -> tuple[np.ndarray, bool]:
    counts: dict[int, int] = {}
    keep: list[int] = []
    skipped: list[int] = []
    for i, c in enumerate(cats.tolist()):
        if counts.get(c, 0) < cap:
            counts[c] = counts.get(c, 0) + 1
            keep.append(i)
            if len(keep) == k:
                return candidates[np.array(keep)], True
        else:
            skipped.append(i)
    held = len(keep) >= k
    order = sorted(keep + skipped[:k - len(keep)])
    return candidates[np.array(order, dtype=np.int64)], held


def intra_list_diversity(unit_vectors: np.ndarray, items: np.ndarray) -> float:
    """1 - mean pairwise cosine of a list (0 for fewer than two items)."""
    if len(items) < 2:
        return 0.0
    v = unit_vectors[items]
    sims = v @ v.T
    n = len(items)
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))
