"""Where a request is scored: pure numpy over the model's item vocabulary.

Index 0 is the padding row of the bundle and is never eligible. Catalog facts
(stock, category) are kept as arrays aligned to the vocabulary so that every
filter is a vectorised mask; they are rebuilt when the catalog or model changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from services.common.filters import ItemFilter
from services.common.stores.catalog import CatalogSnapshot


@dataclass(frozen=True)
class CatalogMasks:
    """Catalog facts for each vocabulary index of one model."""

    catalog_version: int
    valid: np.ndarray  # bool [N+1]: every real item (False only for padding)
    in_stock: np.ndarray  # bool [N+1]
    category_codes: np.ndarray  # int32 [N+1]; -1 for padding
    category_code: Mapping[str, int]

    @classmethod
    def build(cls, item_ids: Sequence[str], snapshot: CatalogSnapshot) -> "CatalogMasks":
        """Items absent from the catalog count as in stock with no category (see CatalogSnapshot)."""
        n = len(item_ids)
        valid = np.ones(n + 1, dtype=bool)
        valid[0] = False
        in_stock = valid.copy()
        codes = np.full(n + 1, -1, dtype=np.int32)
        category_code: dict[str, int] = {}
        items = snapshot.items
        for i, item_id in enumerate(item_ids, start=1):
            item = items.get(item_id)
            category = ""
            if item is not None:
                category = item.category
                in_stock[i] = item.in_stock
            code = category_code.get(category)
            if code is None:
                code = category_code[category] = len(category_code)
            codes[i] = code
        return cls(snapshot.version, valid, in_stock, codes, category_code)

    @property
    def eligible_in_stock(self) -> int:
        return int(self.in_stock.sum())


@dataclass(frozen=True)
class RowFilter:
    """One request's filter compiled against the catalog masks.

    ``allows`` checks only given candidates (O(candidates)), so top-k can be taken
    on the scores first and filtered after; ``mask`` is the full bool [N+1] for the
    exact fallback. Both mean the same thing.
    """

    base: np.ndarray  # bool [N+1], shared with CatalogMasks (never written)
    codes: np.ndarray  # int32 [N+1]
    include: np.ndarray | None  # sorted category codes to keep; None = no include filter
    exclude: np.ndarray  # sorted category codes to drop
    drop: np.ndarray  # sorted int64 vocabulary indices to drop

    @classmethod
    def build(cls, masks: CatalogMasks, index_of: Mapping[str, int], item_filter: ItemFilter,
              excluded_ids: Iterable[str] = ()) -> "RowFilter":
        include = None
        if item_filter.include_categories:
            include = _sorted_codes(masks.category_code, item_filter.include_categories)
        exclude = _sorted_codes(masks.category_code, item_filter.exclude_categories)
        drop = np.array(sorted({index_of[i] for i in {*item_filter.exclude_item_ids, *excluded_ids} if i in index_of}),
                        dtype=np.int64)
        base = masks.in_stock if item_filter.in_stock_only else masks.valid
        return cls(base, masks.category_codes, include, exclude, drop)

    def excluding(self, index_of: Mapping[str, int], excluded_ids: Iterable[str]) -> "RowFilter":
        """This filter with ``excluded_ids`` dropped too: the same as ``build(..., excluded_ids)``
        but reusing the compiled category part (one compiled filter per distinct ItemFilter in a batch)."""
        extra = {index_of[i] for i in excluded_ids if i in index_of}
        if not extra:
            return self
        if self.drop.size:
            extra.update(self.drop.tolist())
        drop = np.array(sorted(extra), dtype=np.int64)  # tens of ids: cheaper than np.union1d
        return RowFilter(self.base, self.codes, self.include, self.exclude, drop)

    @property
    def size(self) -> int:
        return self.base.shape[0]

    def allows_shared(self, idx: np.ndarray) -> np.ndarray:
        """bool per index (any shape), before the per-caller ``drop``: stock, categories, padding."""
        ok = self.base[idx] & (idx > 0)
        if self.include is not None:
            ok &= in_sorted(self.codes[idx], self.include)
        if self.exclude.size:
            ok &= ~in_sorted(self.codes[idx], self.exclude)
        return ok

    def allows(self, idx: np.ndarray) -> np.ndarray:
        """bool per candidate index (any order, may repeat); index 0 is never allowed."""
        ok = self.allows_shared(idx)
        if self.drop.size:
            ok &= ~in_sorted(idx, self.drop)
        return ok

    def mask(self) -> np.ndarray:
        """bool [N+1]: every index this filter allows."""
        mask = self.base.copy()
        if self.include is not None:
            mask &= np.isin(self.codes, self.include)
        if self.exclude.size:
            mask &= ~np.isin(self.codes, self.exclude)
        mask[self.drop] = False
        mask[0] = False
        return mask


def _sorted_codes(category_code: Mapping[str, int], categories: Iterable[str]) -> np.ndarray:
    """int32 codes of the known ``categories``, sorted (for ``in_sorted``)."""
    return np.array(sorted({category_code[c] for c in categories if c in category_code}), dtype=np.int32)


def in_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_set)`` for a sorted ``sorted_set`` and a few values.

    One binary search per value: for the tens of candidates of a request this is
    several times cheaper than ``np.isin``, whose fixed cost (a lookup table over
    the id range, or a sort of both arrays) dominates at that size.
    """
    if not sorted_set.size:
        return np.zeros(np.shape(values), dtype=bool)
    pos = np.searchsorted(sorted_set, values)
    pos[pos == sorted_set.size] = 0
    return sorted_set[pos] == values


def eligible_mask(
    masks: CatalogMasks,
    index_of: Mapping[str, int],
    item_filter: ItemFilter,
    excluded_ids: Iterable[str] = (),
) -> np.ndarray:
    """bool [N+1]: which indices may be returned under this filter and these exclusions."""
    return RowFilter.build(masks, index_of, item_filter, excluded_ids).mask()


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


def sort_candidates(indices: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates best first (ties by index, so every backend agrees)."""
    order = np.lexsort((indices, -scores))
    return indices[order], scores[order]


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
