"""Bound expressions as masks over a catalog table."""
import numpy as np
import pytest
from shopstream.catalog.v1 import catalog_pb2

from services.common.stores.catalog import CatalogSnapshot
from services.rules.evaluate import Interactions, ItemTable, eligible
from services.rules.language import parse


@pytest.fixture(scope="module")
def table() -> ItemTable:
    items = {f"i{n}": catalog_pb2.CatalogItem(item_id=f"i{n}", category="A" if n % 2 else "B", brand=f"b{n % 3}",
                                              price=float(n), in_stock=n % 5 != 0) for n in range(1, 11)}
    return ItemTable.build(["unknown", *items], CatalogSnapshot(1, items))


def picked(table, text, params=None, interactions=Interactions()):
    mask = eligible(parse(text).bind(params), table, interactions)
    return {item for item, keep in zip(table.item_ids, mask) if keep}


def test_price_and_brand_with_parameters(table):
    got = picked(table, "EXCLUDE ItemID WHERE Items.price > $max | INCLUDE ItemID WHERE Items.brand IN ($brands)",
                 {"max": 7, "brands": ["b1", "b2"]})
    assert got == {"i1", "i2", "i4", "i5", "i7"}


def test_interactions_purchase_and_history(table):
    seen = Interactions(history=["i1", "i3"], purchased={"i2"})
    assert picked(table, 'EXCLUDE ItemID WHERE Interactions.type IN ("purchase")', interactions=seen) \
        == set(table.item_ids) - {"i2"}
    assert picked(table, 'INCLUDE ItemID WHERE Items.brand != "b1" AND Items.in_stock = false') == {"i5"}
    assert picked(table, 'INCLUDE ItemID WHERE Interactions.type IN ("view")', interactions=seen) == {"i1", "i3"}


def test_unknown_price_matches_no_price_comparison(table):
    assert "unknown" not in picked(table, "INCLUDE ItemID WHERE Items.price <= 100")
    assert "unknown" in picked(table, "EXCLUDE ItemID WHERE Items.price <= 100")
    assert "unknown" in picked(table, 'INCLUDE ItemID WHERE Items.in_stock = true')


def test_not_or_and_item_ids(table):
    got = picked(table, 'INCLUDE ItemID WHERE NOT (Items.category = "A" OR Items.item_id IN ("i4", "i6"))')
    assert got == {"unknown", "i2", "i8", "i10"}


def test_every_clause_applies(table):
    got = picked(table, 'INCLUDE ItemID WHERE Items.category = "B" | INCLUDE ItemID WHERE Items.price >= 6 '
                        '| EXCLUDE ItemID WHERE Items.in_stock = false')
    assert got == {"i6", "i8"}
    mask = eligible(parse('INCLUDE ItemID WHERE Items.category = "B"').bind({}), table)
    assert mask.dtype == np.bool_ and mask.shape == (len(table),)
