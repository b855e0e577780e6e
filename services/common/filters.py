"""Business filters, one meaning for every service that applies them."""
from __future__ import annotations

from dataclasses import dataclass, field


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
