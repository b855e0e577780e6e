from shopstream.catalog.v1 import catalog_pb2

from services.common.filters import ItemFilter
from services.common.stores.catalog import CatalogSnapshot
from services.gateway.fallback import TrendingFallback, select


def catalog() -> CatalogSnapshot:
    spec = {"a": ("x", True), "b": ("x", True), "c": ("y", True), "d": ("x", False), "e": ("x", True),
            "f": ("y", True), "g": ("x", True)}
    return CatalogSnapshot(version=3, items={i: catalog_pb2.CatalogItem(item_id=i, category=c, in_stock=s)
                                             for i, (c, s) in spec.items()})


TRENDING = [("d", 9.0), ("c", 8.0), ("zz", 7.5), ("a", 7.0), ("b", 6.0)]


def test_trending_filtered_then_padded_to_k_with_descending_scores():
    out = select(TRENDING, catalog(), ItemFilter(), excluded={"a"}, k=5)
    # d is out of stock, a is excluded; zz is unknown to the catalog (allowed: in stock, no category)
    assert [i for i, _ in out] == ["c", "zz", "b", "e", "f"]
    scores = [s for _, s in out]
    assert scores == sorted(scores, reverse=True)
    assert scores[-2:] == [0.0, 0.0]


def test_padding_respects_filters_and_never_duplicates():
    out = select(TRENDING, catalog(), ItemFilter(include_categories=frozenset({"x"})), excluded=set(), k=10)
    assert [i for i, _ in out] == ["a", "b", "e", "g"]  # d out of stock, c/f/zz wrong category


def test_fewer_eligible_than_k_returns_what_exists():
    out = select([], catalog(), ItemFilter(exclude_item_ids=frozenset({"a", "b"})), excluded={"c"}, k=10)
    assert [i for i, _ in out] == ["e", "f", "g"]


class FakeTrending:
    """In-process TrendingStore for this pure-logic unit test."""

    def __init__(self, rows):
        self.rows = rows
        self.asked = []

    async def top(self, n):
        self.asked.append(n)
        return self.rows[:n]


async def test_trending_fallback_reads_a_pool_and_pads():
    store = FakeTrending(TRENDING)
    fb = TrendingFallback(store, catalog, pool=3)
    out = await fb.recommend(4, ItemFilter(), excluded={"c"})
    assert [i for i, _ in out] == ["zz", "a", "b", "e"]
    assert store.asked == [4]
    assert fb.category_of("c") == "y" and fb.category_of("nope") == ""
