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
class ItemTable:
    item_ids: np.ndarray  # object [N]
    index_of: Mapping[str, int]
    category: np.ndarray  # object [N]
    brand: np.ndarray  # object [N]
    price: np.ndarray  # float64 [N], NaN when unknown
    in_stock: np.ndarray  # bool [N]

    @classmethod
    def build(cls, item_ids: Sequence[str], snapshot: CatalogSnapshot) -> "ItemTable":
        n = len(item_ids)
        category = np.empty(n, dtype=object)
        brand = np.empty(n, dtype=object)
        price = np.full(n, np.nan)
        in_stock = np.ones(n, dtype=bool)
        items = snapshot.items
        for i, item_id in enumerate(item_ids):
            item = items.get(item_id)
            if item is None:
                category[i] = brand[i] = ""
                continue
            category[i], brand[i], in_stock[i] = item.category, item.brand, item.in_stock
            if item.price > 0:  # proto3 default 0: no price published
                price[i] = item.price
        ids = np.array(list(item_ids), dtype=object)
        return cls(ids, {item_id: i for i, item_id in enumerate(item_ids)}, category, brand, price, in_stock)

    def __len__(self) -> int:
        return len(self.item_ids)

    def column(self, name: str) -> np.ndarray:
        return self.item_ids if name == "item_id" else getattr(self, name)


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
        column = table.column(cond.field)
        if cond.field == "price":
            with np.errstate(invalid="ignore"):
                out = _OPS[cond.op](column, value)
            return out & ~np.isnan(column)  # unknown price: no comparison holds, != included
        return np.asarray(_OPS[cond.op](column, value), dtype=bool)
    if isinstance(cond, Membership):
        values = {v for value in cond.values for v in bound.resolve(value)}
        if cond.source == "interactions":
            idx = [table.index_of[i] for i in interactions.items(values) if i in table.index_of]
            out = np.zeros(len(table), dtype=bool)
            out[idx] = True
        elif cond.field == "price":
            out = np.isin(table.price, np.array(sorted(values), dtype=float))
        else:
            out = np.isin(table.column(cond.field), list(values))
        return ~out if cond.negated else out
    if isinstance(cond, Not):
        return ~_condition(cond.operand, bound, table, interactions)
    if isinstance(cond, BoolOp):
        parts = [_condition(c, bound, table, interactions) for c in cond.operands]
        return np.logical_and.reduce(parts) if cond.op == "and" else np.logical_or.reduce(parts)
    raise TypeError(f"not a condition: {cond!r}")
