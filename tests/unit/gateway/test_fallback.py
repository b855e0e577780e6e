from shopstream.catalog.v1 import catalog_pb2

from services.common.filters import ItemFilter
from services.common.stores.catalog import CatalogSnapshot
from services.common.stores.memory import MemoryTrendingStore
from services.gateway.fallback import TrendingFallback, select


def catalog() -> CatalogSnapshot:
    spec = {"a": ("x", True), "b": ("x", True), "c": ("y", True), "d": ("x", False), "e": ("x", True),
            "f": ("y", True), "g": ("x", True)}
    return CatalogSnapshot(version=3, items={i: catalog_pb2.CatalogItem(item_id=i, category=c, in_stock=s)
                                             for i, (c, s) in spec.items()})


VIEW = 1
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


async def trending_store(views: dict[str, int]) -> MemoryTrendingStore:
    """An in-memory TrendingStore where each item's score is its number of views."""
    store = MemoryTrendingStore()
    await store.record([(item, VIEW) for item, n in views.items() for _ in range(n)])
    return store


async def test_trending_fallback_reads_a_pool_and_pads():
    store = await trending_store({"d": 10, "c": 9, "zz": 8, "a": 7, "b": 6})
    fb = TrendingFallback(store, catalog, pool=3)
    out = await fb.recommend(4, ItemFilter(), excluded={"c"})
    # It read the top max(pool, k) = 4: b, fifth, comes from the padding (score 0), not from trending.
    assert out == [("zz", 8.0), ("a", 7.0), ("b", 0.0), ("e", 0.0)]
    assert fb.category_of("c") == "y" and fb.category_of("nope") == ""
