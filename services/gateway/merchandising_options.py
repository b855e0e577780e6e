"""A Recommend request's merchandising at the gateway: the named filter expression resolved and
bound, boosts, diversity and the cap checked (``services.rules.merchandising``), and pinned items
placed at their positions in the final list, still under every filter."""
from __future__ import annotations

from dataclasses import dataclass

from shopstream.gateway.v1 import gateway_pb2

from services.common.errors import InvalidArgument
from services.common.filters import ItemFilter
from services.common.stores.catalog import CatalogSnapshot
from services.contract.limits import check_id
from services.gateway import reasons
from services.rules.evaluate import Interactions, ItemTable
from services.rules.merchandising import Merchandising, bind, check_boosts, check_diversity
from services.rules.registry import FilterRegistry

MAX_PINS = 20


@dataclass(frozen=True)
class Pin:
    item_id: str
    position: int


async def from_request(request: gateway_pb2.RecommendRequest, k: int,
                       registry: FilterRegistry | None) -> tuple[Merchandising | None, tuple[Pin, ...]]:
    """The request's merchandising (None when it asks for none) and its pins; InvalidArgument
    (NOT_FOUND for an unknown filter name) when anything is wrong."""
    check_diversity(request.diversity, request.max_per_category)
    boosts = check_boosts("boosts", request.boosts)
    expression = None
    if request.filter_name:
        if registry is None:
            raise InvalidArgument("filter_name: this gateway has no filter registry")
        expression = bind(await registry.text(request.filter_name), request.filter_params)
    elif request.HasField("filter_params") and request.filter_params.fields:
        raise InvalidArgument("filter_params given without filter_name")
    pins = check_pins(request.pins, k)
    if expression is None and not boosts and not request.diversity and not request.max_per_category:
        return None, pins
    return Merchandising(expression, boosts, request.diversity, request.max_per_category,
                         params=request.filter_params), pins


def check_pins(pins, k: int) -> tuple[Pin, ...]:
    if len(pins) > MAX_PINS:
        raise InvalidArgument(f"pins has {len(pins)} entries, at most {MAX_PINS} allowed")
    out, positions, items = [], set(), set()
    for i, pin in enumerate(pins):
        check_id(f"pins[{i}].item_id", pin.item_id)
        if not 0 <= pin.position < k:
            raise InvalidArgument(f"pins[{i}].position must be between 0 and k-1 ({k - 1}), got {pin.position}")
        if pin.position in positions or pin.item_id in items:
            raise InvalidArgument(f"pins[{i}] repeats a position or an item")
        positions.add(pin.position)
        items.add(pin.item_id)
        out.append(Pin(pin.item_id, pin.position))
    return tuple(sorted(out, key=lambda p: p.position))


def apply_pins(items: list[gateway_pb2.RecommendedItem], pins: tuple[Pin, ...], k: int, catalog: CatalogSnapshot,
               item_filter: ItemFilter, excluded: set[str], merch: Merchandising | None,
               interactions: Interactions) -> list[gateway_pb2.RecommendedItem]:
    """``items`` with each pin that passes the request's filters at its position (the items it
    displaces move down; the list stays at most ``k``). A pin the filters refuse is left out:
    a pin never shows an out-of-stock, excluded or already-bought item."""
    allowed = [p for p in pins if _eligible(p.item_id, catalog, item_filter, excluded, merch, interactions)]
    if not allowed:
        return items
    pinned_ids = {p.item_id for p in allowed}
    rest = [i for i in items if i.item_id not in pinned_ids]
    top = max((i.score for i in items), default=0.0)
    out: list[gateway_pb2.RecommendedItem] = []
    pins_left = list(allowed)
    while len(out) < k and (rest or pins_left):
        if pins_left and pins_left[0].position <= len(out):
            pin = pins_left.pop(0)
            out.append(gateway_pb2.RecommendedItem(item_id=pin.item_id, score=top, reason=reasons.pinned()))
        elif rest:
            out.append(rest.pop(0))
        else:
            pin = pins_left.pop(0)  # fewer items than the pin's position: it goes last
            out.append(gateway_pb2.RecommendedItem(item_id=pin.item_id, score=top, reason=reasons.pinned()))
    return out


def _eligible(item_id: str, catalog: CatalogSnapshot, item_filter: ItemFilter, excluded: set[str],
              merch: Merchandising | None, interactions: Interactions) -> bool:
    item = catalog.items.get(item_id)
    if item is None or item_id in excluded or item_id in item_filter.exclude_item_ids:
        return False
    if item_filter.in_stock_only and not item.in_stock:
        return False
    if item_filter.include_categories and item.category not in item_filter.include_categories:
        return False
    if item.category in item_filter.exclude_categories:
        return False
    if merch is not None and merch.expression is not None:
        return bool(merch.eligible(ItemTable.build([item_id], catalog), interactions)[0])
    return True
