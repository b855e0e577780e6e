"""Business filters, one meaning for every service that applies them."""
from __future__ import annotations

from dataclasses import dataclass, field

from shopstream.ranker.v1 import ranker_pb2


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
