"""The storefront's business rules: request validation and filter defaults."""
from __future__ import annotations

from shopstream.gateway.v1 import gateway_pb2

from services.common.errors import InvalidArgument
from services.common.filters import ItemFilter
from services.contract.limits import check_filter

# Defaults when the storefront leaves an optional filter unset.
DEFAULT_IN_STOCK_ONLY = True
DEFAULT_EXCLUDE_PURCHASED = True
DEFAULT_EXCLUDE_SEEN = False


def resolve_k(k: int, default_k: int, max_k: int) -> int:
    """0 (unset) means the default; anything else must lie in 1..max_k."""
    if k == 0:
        return min(default_k, max_k)
    if not 1 <= k <= max_k:
        raise InvalidArgument(f"k must be between 1 and {max_k} (0 for the default {default_k}), got {k}")
    return k


def item_filter(filters: gateway_pb2.RecommendFilters, max_exclude_ids: int) -> ItemFilter:
    """RecommendFilters with the defaults applied to whatever is unset."""
    check_filter("filters", filters, max_item_ids=max_exclude_ids)
    return ItemFilter(
        include_categories=frozenset(filters.include_categories),
        exclude_categories=frozenset(filters.exclude_categories),
        exclude_item_ids=frozenset(filters.exclude_item_ids),
        in_stock_only=filters.in_stock_only if filters.HasField("in_stock_only") else DEFAULT_IN_STOCK_ONLY,
        exclude_purchased=(filters.exclude_purchased if filters.HasField("exclude_purchased")
                           else DEFAULT_EXCLUDE_PURCHASED),
        exclude_seen=filters.exclude_seen if filters.HasField("exclude_seen") else DEFAULT_EXCLUDE_SEEN,
    )
