"""Business filters, one meaning for every service that applies them.

``ItemFilter`` is what a request asks for. The rules themselves (stock, categories,
excluded ids, never the padding row) are written once, in ``RowFilter``: a filter
compiled against ``CatalogMasks``, the catalog facts of a list of item ids. The
ranker compiles it over a model's vocabulary; the gateway's trending fallback over
the trending items and catalog it picks from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
from shopstream.ranker.v1 import ranker_pb2

from services.common.stores.catalog import CatalogSnapshot


@dataclass(frozen=True)
class ItemFilter:
    include_categories: frozenset[str] = field(default_factory=frozenset)
    exclude_categories: frozenset[str] = field(default_factory=frozenset)
    exclude_item_ids: frozenset[str] = field(default_factory=frozenset)
    in_stock_only: bool = True
    exclude_seen: bool = False
    exclude_purchased: bool = True

    def user_exclusions(self, history: list[str], purchased: set[str]) -> set[str]:
        """Item ids this user must not be shown, given their state."""
        out = set(self.exclude_item_ids)
        if self.exclude_seen:
            out.update(history)
        if self.exclude_purchased:
            out.update(purchased)
        return out

    @classmethod
    def from_proto(cls, f: ranker_pb2.ItemFilter) -> "ItemFilter":
        """Exactly what the ranker is sent; business defaults are the gateway's (rules.py)."""
        return cls(
            include_categories=frozenset(f.include_categories),
            exclude_categories=frozenset(f.exclude_categories),
            exclude_item_ids=frozenset(f.exclude_item_ids),
            in_stock_only=f.in_stock_only,
            exclude_seen=f.exclude_seen,
            exclude_purchased=f.exclude_purchased,
        )

    def to_proto(self) -> ranker_pb2.ItemFilter:
        return ranker_pb2.ItemFilter(
            include_categories=sorted(self.include_categories),
            exclude_categories=sorted(self.exclude_categories),
            exclude_item_ids=sorted(self.exclude_item_ids),
            in_stock_only=self.in_stock_only,
            exclude_seen=self.exclude_seen,
            exclude_purchased=self.exclude_purchased,
        )


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
