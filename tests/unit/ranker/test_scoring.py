import numpy as np
import pytest
from shopstream.catalog.v1 import catalog_pb2

from services.common.filters import ItemFilter
from services.common.stores.catalog import CatalogSnapshot
from services.common.filters import CatalogMasks, RowFilter, eligible_mask, in_sorted
from services.ranker.scoring import pick_allowed, pick_allowed_rows, top_k, unit_rows, user_scores

IDS = [f"i{n}" for n in range(1, 11)]  # index n <-> "i{n}"
INDEX_OF = {item: i for i, item in enumerate(IDS, start=1)}


def snapshot() -> CatalogSnapshot:
    items = {}
    for n in range(1, 11):
        items[f"i{n}"] = catalog_pb2.CatalogItem(item_id=f"i{n}", category="shoes" if n % 2 else "hats",
                                                 in_stock=n not in (3, 4))
    del items["i10"]  # not in the catalog: in stock, no category
    return CatalogSnapshot(version=7, items=items)


def test_top_k_matches_a_full_sort():
    rng = np.random.default_rng(1)
    for _ in range(50):
        scores = rng.normal(size=1001).astype(np.float32)
        mask = rng.random(1001) < 0.7
        mask[0] = True  # even if a caller forgets, padding must not come back
        k = int(rng.integers(1, 60))
        idx, got = top_k(scores, mask, k)
        eligible = [i for i in range(1, 1001) if mask[i]]
        expected = sorted(eligible, key=lambda i: -scores[i])[:k]
        assert idx.tolist() == expected
        assert np.allclose(got, scores[expected])
        assert 0 not in idx


def test_top_k_with_k_above_eligible_returns_all_eligible_sorted():
    scores = np.array([100.0, 1.0, 5.0, 3.0], dtype=np.float32)
    mask = np.array([True, True, False, True])
    idx, got = top_k(scores, mask, 10)
    assert idx.tolist() == [3, 1]
    assert got.tolist() == [3.0, 1.0]


def test_top_k_nothing_eligible():
    idx, got = top_k(np.ones(5, dtype=np.float32), np.zeros(5, dtype=bool), 3)
    assert idx.size == 0 and got.size == 0


def test_masks_follow_the_catalog():
    masks = CatalogMasks.build(IDS, snapshot())
    assert masks.catalog_version == 7
    assert not masks.valid[0] and not masks.in_stock[0]
    assert masks.in_stock[1:].tolist() == [n not in (3, 4) for n in range(1, 11)]
    assert masks.category_codes[0] == -1
    assert masks.category_codes[10] == masks.category_code[""]


def test_eligible_mask_applies_every_filter():
    masks = CatalogMasks.build(IDS, snapshot())
    everything = eligible_mask(masks, INDEX_OF, ItemFilter(in_stock_only=False))
    assert np.flatnonzero(everything).tolist() == list(range(1, 11))
    in_stock = eligible_mask(masks, INDEX_OF, ItemFilter(in_stock_only=True))
    assert np.flatnonzero(in_stock).tolist() == [1, 2, 5, 6, 7, 8, 9, 10]
    shoes = eligible_mask(masks, INDEX_OF, ItemFilter(in_stock_only=False, include_categories=frozenset({"shoes"})))
    assert np.flatnonzero(shoes).tolist() == [1, 3, 5, 7, 9]
    no_hats = eligible_mask(masks, INDEX_OF, ItemFilter(in_stock_only=True, exclude_categories=frozenset({"hats"}),
                                                        exclude_item_ids=frozenset({"i1", "unknown"})),
                            excluded_ids={"i5"})
    assert np.flatnonzero(no_hats).tolist() == [7, 9, 10]
    unknown_category = eligible_mask(masks, INDEX_OF, ItemFilter(include_categories=frozenset({"socks"})))
    assert not unknown_category.any()


def test_scores_and_cosine():
    emb = np.array([[0, 0], [1, 0], [0, 2], [3, 4]], dtype=np.float32)
    assert user_scores(emb, np.array([1.0, 1.0])).tolist() == [0, 1, 2, 7]
    unit = unit_rows(emb)
    assert unit[0].tolist() == [0, 0]
    assert np.allclose(np.linalg.norm(unit[1:], axis=1), 1.0)
    assert unit[3] == pytest.approx([0.6, 0.8])


def test_excluding_equals_building_with_the_exclusions():
    masks = CatalogMasks.build(IDS, snapshot())
    f = ItemFilter(in_stock_only=True, exclude_item_ids=frozenset({"i1", "unknown"}))
    compiled = RowFilter.build(masks, INDEX_OF, f)
    assert compiled.excluding(INDEX_OF, []) is compiled  # nothing to add: shared as is
    extended = compiled.excluding(INDEX_OF, ["i5", "i1", "nope", "i5"])
    direct = RowFilter.build(masks, INDEX_OF, f, {"i5", "nope"})
    assert extended.drop.tolist() == direct.drop.tolist() == [1, 5]
    assert extended.include is compiled.include and extended.exclude is compiled.exclude
    assert np.array_equal(extended.mask(), direct.mask())


def test_pick_allowed_rows_equals_pick_allowed_row_by_row():
    rng = np.random.default_rng(3)
    masks = CatalogMasks.build(IDS, snapshot())
    shared = [RowFilter.build(masks, INDEX_OF, ItemFilter(in_stock_only=False)),
              RowFilter.build(masks, INDEX_OF, ItemFilter(include_categories=frozenset({"shoes"}))),
              RowFilter.build(masks, INDEX_OF, ItemFilter(in_stock_only=False, exclude_categories=frozenset({"hats"})))]
    for _ in range(30):
        batch = int(rng.integers(1, 9))
        filters, ks = [], []
        for _ in range(batch):
            f = shared[int(rng.integers(0, 3))]
            if rng.random() < 0.5:
                f = f.excluding(INDEX_OF, [IDS[i] for i in rng.integers(0, 10, 3)])
            filters.append(f)
            ks.append(int(rng.integers(1, 8)))
        indices = np.stack([rng.permutation(11)[:8] for _ in range(batch)]).astype(np.int64)  # includes 0 at times
        scores = rng.normal(size=indices.shape).astype(np.float32)
        got = pick_allowed_rows(indices, scores, filters, ks)
        assert len(got) == batch
        for row in range(batch):
            want_i, want_s = pick_allowed(indices[row], scores[row], filters[row], ks[row])
            assert got[row][0].tolist() == want_i.tolist() and got[row][0].dtype == np.int64
            assert got[row][1].tolist() == want_s.tolist() and got[row][1].dtype == np.float32
    assert pick_allowed_rows(np.zeros((0, 4), np.int64), np.zeros((0, 4), np.float32), [], []) == []


@pytest.mark.parametrize("set_size", [0, 1, 5, 40])
def test_in_sorted_equals_isin(set_size):
    rng = np.random.default_rng(set_size)
    sorted_set = np.unique(rng.integers(0, 60, set_size)).astype(np.int64)
    values = rng.integers(-5, 70, (3, 20))  # below, inside and above the set's range; any shape
    assert np.array_equal(in_sorted(values, sorted_set), np.isin(values, sorted_set))


def test_compiled_filter_sets_are_sorted_for_binary_search():
    masks = CatalogMasks.build(IDS, snapshot())
    f = RowFilter.build(masks, INDEX_OF, ItemFilter(include_categories=frozenset({"shoes", "hats", ""}),
                                                    exclude_categories=frozenset({"hats", "shoes"}),
                                                    exclude_item_ids=frozenset({"i9", "i2", "i5"})))
    for values in (f.include, f.exclude, f.drop):
        assert values.tolist() == sorted(values.tolist())
    assert f.excluding(INDEX_OF, ["i7", "i1"]).drop.tolist() == [1, 2, 5, 7, 9]
