"""The ranker applies a request's filter expression, boosts, diversity and category cap, and
explains every item with a history item of the user (real server, Redis and bundle)."""
from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2
from shopstream.catalog.v1 import catalog_pb2
from shopstream.ranker.v1 import ranker_pb2

from services.common.stores.catalog import RedisCatalogStore
from support.ranker_harness import CATEGORIES, ITEMS, Ranker, add_history, ids, vectors
from support.toy_bundle import publish_toy_bundle

pytestmark = pytest.mark.integration


def priced_catalog() -> list[catalog_pb2.CatalogItem]:
    """Brand "acme" for items 1-2 of every category, "zen" for 3-4; price = 10 x the item number."""
    return [catalog_pb2.CatalogItem(item_id=i, category=CATEGORIES[i[0]], in_stock=True,
                                    brand="acme" if int(i[1:]) <= 2 else "zen", price=10.0 * int(i[1:]))
            for i in ITEMS]


@pytest.fixture
async def ranker(tmp_path, redis_client, redis_url):
    await RedisCatalogStore(redis_client).upsert(priced_catalog())
    publish_toy_bundle(tmp_path, ITEMS, vectors())
    async with Ranker(tmp_path, redis_client, redis_url) as r:
        await r.refresh_catalog()
        await r.load_model()
        await add_history(r.states, "shopper", ["s1", "h1"], purchased={"h1"})
        yield r


def params(**values) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


async def rank(ranker, **fields):
    return await ranker.stub.Rank(ranker_pb2.RankRequest(user_id="shopper", **fields), timeout=5)


async def test_an_expression_with_parameters_holds_and_k_items_come_back(ranker):
    resp = await rank(ranker, k=4, filter_expression=(
        "EXCLUDE ItemID WHERE Items.price > $max | INCLUDE ItemID WHERE Items.brand IN ($brands) "
        '| EXCLUDE ItemID WHERE Interactions.type IN ("purchase")'),
        filter_params=params(max=30, brands=["zen"]))
    # zen = items 3-4, price <= 30 = items 1-3: s3, h3, b3 remain (h1 was bought anyway)
    assert sorted(ids(resp)) == ["b3", "h3", "s3"]


async def test_a_boost_lifts_a_brand_over_the_model(ranker):
    plain = await rank(ranker, k=3)
    assert ids(plain)[0].startswith("s") or ids(plain)[0].startswith("h")
    boosted = await rank(ranker, k=3, boosts=[ranker_pb2.ScoreBoost(field="category", values=["bags"], weight=100)])
    assert [i[0] for i in ids(boosted)] == ["b", "b", "b"]
    sunk = await rank(ranker, k=12, boosts=[ranker_pb2.ScoreBoost(field="brand", values=["zen"], weight=-100)])
    brands = ["zen" if int(i[1:]) > 2 else "acme" for i in ids(sunk)]
    assert brands == sorted(brands)  # every acme item above every zen one


async def test_category_cap_and_diversity(ranker):
    capped = await rank(ranker, k=6, max_per_category=2)
    categories = [i[0] for i in ids(capped)]
    assert len(categories) == 6 and max(categories.count(c) for c in "shb") == 2
    varied = await rank(ranker, k=3, diversity=0.9)
    assert len({i[0] for i in ids(varied)}) == 3  # one per axis: nothing closer than the others


async def test_every_item_is_explained_by_a_history_item(ranker):
    resp = await rank(ranker, k=5)
    assert resp.items
    # One axis per category: an s-item is nearest s1 in the item space, an h-item h1.
    for item in resp.items:
        assert item.reason_item_id == {"s": "s1", "h": "h1"}[item.item_id[0]]
        assert item.reason_strength > 0 and not item.new_arrival


async def test_reasons_by_occlusion_cite_the_item_whose_removal_moves_it(tmp_path, redis_client, redis_url):
    # SHOPSTREAM_RANKER_REASON_WINDOW=2: the toy encoder sums the history's vectors, so an s-item
    # falls when s1 is removed from the history and an h-item when h1 is.
    await RedisCatalogStore(redis_client).upsert(priced_catalog())
    publish_toy_bundle(tmp_path, ITEMS, vectors())
    async with Ranker(tmp_path, redis_client, redis_url, reason_window=2) as r:
        await r.refresh_catalog()
        await r.load_model()
        await add_history(r.states, "shopper", ["s1", "h1"], purchased={"h1"})
        for fields in ({}, {"max_per_category": 2}):  # the plain and the merchandised path
            resp = await rank(r, k=4, **fields)
            assert len(resp.items) == 4
            for item in resp.items:
                assert item.reason_item_id == {"s": "s1", "h": "h1"}[item.item_id[0]]
                assert item.reason_strength > 0


@pytest.mark.parametrize("fields, words", [
    ({"filter_expression": "EXCLUDE ItemID WHERE Items.prize > 3"}, "line 1, column 28: unknown field Items.prize"),
    ({"filter_expression": "EXCLUDE ItemID WHERE Items.price > $max"}, "missing parameter(s) $max"),
    ({"diversity": 1.5}, "diversity must be between 0 and 1"),
    ({"boosts": [ranker_pb2.ScoreBoost(field="colour", values=["x"], weight=1)]}, "boosts[0].field must be one of"),
])
async def test_bad_merchandising_is_invalid_argument(ranker, fields, words):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rank(ranker, k=3, **fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in err.value.details()
