"""A bound filter expression as a boolean mask over a table of items.

``ItemTable`` holds the catalog facts the language can name, one row per item id in a given
order (the ranker's model vocabulary, or the few items the trending fallback picks from), so
the same expression means the same thing on the personalised path and on every fallback.
Items absent from the catalog have no brand or category, an unknown price (every price
comparison is false for them) and count as in stock, as in ``CatalogSnapshot``.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

import numpy as np

from services.common.stores.catalog import CatalogSnapshot
from services.rules.language import BoolOp, BoundExpression, Comparison, Condition, Membership, Not

_OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Codes:
    """A string column as int32 codes: comparisons and IN become integer work."""

    codes: np.ndarray  # int32 [N]
    code_of: Mapping[str, int]

    @classmethod
    def build(cls, values: Sequence[str]) -> "Codes":
        code_of: dict[str, int] = {}
        codes = np.fromiter((code_of.setdefault(v, len(code_of)) for v in values), dtype=np.int32, count=len(values))
        return cls(codes, code_of)

    def matches(self, values: Collection[str]) -> np.ndarray:
        wanted = [self.code_of[v] for v in values if v in self.code_of]
        if not wanted:
            return np.zeros(len(self.codes), dtype=bool)
        if len(wanted) == 1:
            return self.codes == wanted[0]
        lookup = np.zeros(len(self.code_of), dtype=bool)  # one gather, not np.isin's sort
        lookup[wanted] = True
        return lookup[self.codes]


@dataclass(frozen=True)
class ItemTable:
    index_of: Mapping[str, int]
    category: Codes
    brand: Codes
    price: np.ndarray  # float64 [N], NaN when unknown
    in_stock: np.ndarray  # bool [N]
    item_ids: Sequence[str]

    @classmethod
    def build(cls, item_ids: Sequence[str], snapshot: CatalogSnapshot) -> "ItemTable":
        n = len(item_ids)
        categories: list[str] = [""] * n
        brands: list[str] = [""] * n
        price = np.full(n, np.nan)
        in_stock = np.ones(n, dtype=bool)
        items = snapshot.items
        for i, item_id in enumerate(item_ids):
            item = items.get(item_id)
            if item is None:
                continue
            categories[i], brands[i], in_stock[i] = item.category, item.brand, item.in_stock
            if item.price > 0:  # proto3 default 0: no price published
                price[i] = item.price
        return cls({item_id: i for i, item_id in enumerate(item_ids)}, Codes.build(categories), Codes.build(brands),
                   price, in_stock, item_ids)

    def __len__(self) -> int:
        return len(self.price)

    def matches(self, name: str, values: Collection) -> np.ndarray:
        """bool [N]: the string or bool column ``name`` equals one of ``values``."""
        if name == "in_stock":
            out = np.zeros(len(self), dtype=bool)
            for v in set(values):
                out |= self.in_stock == v
            return out
        if name == "item_id":
            out = np.zeros(len(self), dtype=bool)
            out[[self.index_of[v] for v in values if v in self.index_of]] = True
            return out
        return getattr(self, name).matches(values)


@dataclass(frozen=True)
class Interactions:
    """What ``Interactions.type`` can see of one user. The user state keeps one history of
    every interaction (not its type) and the purchased set, so ``purchase`` means purchased and
    the other types mean "anywhere in the recent history" (docs/rules.md)."""

    history: Collection[str] = ()
    purchased: Collection[str] = ()

    def items(self, types: Collection[str]) -> set[str]:
        out: set[str] = set()
        if "purchase" in types:
            out.update(self.purchased)
        if any(t != "purchase" for t in types):
            out.update(self.history)
        return out


def eligible(expression: BoundExpression, table: ItemTable, interactions: Interactions = Interactions()) -> np.ndarray:
    """bool [N]: items that match every INCLUDE clause and no EXCLUDE clause."""
    keep = np.ones(len(table), dtype=bool)
    for clause in expression.expression.clauses:
        matched = _condition(clause.condition, expression, table, interactions)
        keep &= matched if clause.include else ~matched
    return keep


def _condition(cond: Condition, bound: BoundExpression, table: ItemTable, interactions: Interactions) -> np.ndarray:
    if isinstance(cond, Comparison):
        (value,) = bound.resolve(cond.value)
        if cond.field == "price":
            with np.errstate(invalid="ignore"):
                out = _OPS[cond.op](table.price, value)
            return out & ~np.isnan(table.price)  # unknown price: no comparison holds, != included
        equal = table.matches(cond.field, (value,))  # strings and bools: = and != only (language.py)
        return equal if cond.op == "=" else ~equal
    if isinstance(cond, Membership):
        values = {v for value in cond.values for v in bound.resolve(value)}
        if cond.source == "interactions":
            idx = [table.index_of[i] for i in interactions.items(values) if i in table.index_of]
            out = np.zeros(len(table), dtype=bool)
            out[idx] = True
        elif cond.field == "price":
            out = np.isin(table.price, np.array(sorted(values), dtype=float))
        else:
            out = table.matches(cond.field, values)
        return ~out if cond.negated else out
    if isinstance(cond, Not):
        return ~_condition(cond.operand, bound, table, interactions)
    if isinstance(cond, BoolOp):
        parts = [_condition(c, bound, table, interactions) for c in cond.operands]
        return np.logical_and.reduce(parts) if cond.op == "and" else np.logical_or.reduce(parts)
    raise TypeError(f"not a condition: {cond!r}")
