"""Where a request is scored: pure numpy over the model's item vocabulary.

Index 0 is the padding row of the bundle and is never eligible. The filters arrive
compiled against the vocabulary (``services.common.filters.RowFilter``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from services.common.filters import RowFilter, in_sorted


def pick_allowed(indices: np.ndarray, scores: np.ndarray, row_filter: RowFilter,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k allowed of candidates already sorted best first."""
    keep = np.flatnonzero(row_filter.allows(indices))[:k]
    return indices[keep].astype(np.int64, copy=False), scores[keep].astype(np.float32, copy=False)


def pick_allowed_rows(indices: np.ndarray, scores: np.ndarray, filters: Sequence[RowFilter],
                      ks: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``pick_allowed`` for every row of [B, F] candidates (sorted best first per row) at once.

    Rows whose filters share their compiled stock/category part (same ``base``, ``codes``,
    ``include`` and ``exclude`` arrays: ``RowFilter.excluding`` keeps them) are checked in
    one vectorised step; only per-caller drops are applied row by row, and only where a
    row has any. The first k allowed of each row are then taken with one cumulative sum.
    """
    batch = indices.shape[0]
    if batch <= 1:  # batch 1: the plain per-row path has fewer numpy calls
        return [pick_allowed(indices[0], scores[0], filters[0], ks[0])] if batch else []
    ok = np.empty(indices.shape, dtype=bool)
    groups: dict[tuple[int, int, int, int], list[int]] = {}
    for row, f in enumerate(filters):
        groups.setdefault((id(f.base), id(f.codes), id(f.include), id(f.exclude)), []).append(row)
    for rows in groups.values():
        shared = filters[rows[0]]
        if len(rows) == batch:
            ok[:] = shared.allows_shared(indices)
        else:
            ok[rows] = shared.allows_shared(indices[rows])
    for row, f in enumerate(filters):
        if f.drop.size:
            ok[row] &= ~in_sorted(indices[row], f.drop)
    k = np.asarray(ks, dtype=np.int64)[:, None]
    keep = ok & (np.cumsum(ok, axis=1) <= k)
    ends = np.cumsum(np.count_nonzero(keep, axis=1)).tolist()
    flat_i = indices[keep].astype(np.int64, copy=False)
    flat_s = scores[keep].astype(np.float32, copy=False)
    out, start = [], 0
    for end in ends:
        out.append((flat_i[start:end], flat_s[start:end]))
        start = end
    return out


def top_k(scores: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best eligible indices by score, best first, and their scores.

    argpartition keeps this O(N) for the selection; only the k winners are
    sorted. Returns fewer than k when fewer are eligible; index 0 never appears.
    """
    candidates = np.flatnonzero(mask)
    if candidates.size and candidates[0] == 0:
        candidates = candidates[1:]
    if k <= 0 or candidates.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    cand_scores = scores[candidates]
    if k < candidates.size:
        part = np.argpartition(-cand_scores, k - 1)[:k]
        candidates, cand_scores = candidates[part], cand_scores[part]
    order = np.argsort(-cand_scores, kind="stable")
    return candidates[order], cand_scores[order]


def user_scores(item_embeddings: np.ndarray, user_vec: np.ndarray) -> np.ndarray:
    """Dot-product score of every index for one user vector: float32 [N+1]."""
    return item_embeddings @ user_vec.astype(np.float32, copy=False)


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), for cosine similarity."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (embeddings / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)
