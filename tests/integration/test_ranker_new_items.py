"""Items published to the catalog after training (attributes, no interactions) are
ranked and found by Similar, through a real ranker server and real Redis."""
from __future__ import annotations

import numpy as np
import pytest
from shopstream.catalog.v1 import catalog_pb2
from shopstream.ranker.v1 import ranker_pb2

from services.common.stores.catalog import RedisCatalogStore
from support.ranker_harness import ITEMS, Ranker, add_history, catalog_items, ids, vectors
from support.toy_bundle import publish_toy_bundle

pytestmark = pytest.mark.integration

# Attribute "shoe-ish" points along the shoes axis, strongly: a new item with it should top a shoe lover's list.
ATTRIBUTES = {"shoe-ish": np.array([5.0, 0.0, 0.0, 0.0]), "hat-ish": np.array([0.0, 5.0, 0.0, 0.0])}


@pytest.fixture
async def ranker(tmp_path, redis_client, redis_url):
    publish_toy_bundle(tmp_path, ITEMS, vectors(), attribute_vectors=ATTRIBUTES)
    async with Ranker(tmp_path, redis_client, redis_url) as r:
        await RedisCatalogStore(redis_client).upsert(catalog_items())
        await r.refresh_catalog()
        await r.load_model()
        yield r


async def publish_new(r, *items: catalog_pb2.CatalogItem) -> None:
    await RedisCatalogStore(r.redis).upsert(list(items))
    await r.refresh_catalog()
    await r.holder.rebuild_masks()


async def test_a_new_item_is_ranked_from_its_attributes(ranker):
    await add_history(ranker.states, "shoe-lover", ["s1", "s2"])
    before = await ranker.stub.Rank(ranker_pb2.RankRequest(user_id="shoe-lover", k=2), timeout=5)
    assert "s-new" not in ids(before)

    await publish_new(ranker, catalog_pb2.CatalogItem(item_id="s-new", category="shoes", in_stock=True,
                                                      attributes=["shoe-ish"]))
    after = await ranker.stub.Rank(ranker_pb2.RankRequest(user_id="shoe-lover", k=2), timeout=5)
    assert ids(after)[0] == "s-new"
    assert ranker.holder.current.items.new_item_ids == ["s-new"]


async def test_new_items_obey_filters_and_are_found_by_similar(ranker):
    await publish_new(
        ranker,
        catalog_pb2.CatalogItem(item_id="s-new", category="shoes", in_stock=False, attributes=["shoe-ish"]),
        catalog_pb2.CatalogItem(item_id="h-new", category="hats", in_stock=True, attributes=["hat-ish"]),
        catalog_pb2.CatalogItem(item_id="bare", category="hats", in_stock=True),  # no attributes: not rankable
    )
    await add_history(ranker.states, "shopper", ["s1"])
    in_stock = await ranker.stub.Rank(ranker_pb2.RankRequest(
        user_id="shopper", k=3, filter=ranker_pb2.ItemFilter(in_stock_only=True)), timeout=5)
    assert "s-new" not in ids(in_stock)

    similar = await ranker.stub.Similar(ranker_pb2.SimilarRequest(item_id="h-new", k=3), timeout=5)
    assert set(ids(similar)) <= {"h1", "h2", "h3", "h4"} and len(ids(similar)) == 3
    from_old = await ranker.stub.Similar(ranker_pb2.SimilarRequest(item_id="h1", k=5), timeout=5)
    assert "h-new" in ids(from_old)
    assert "bare" not in ranker.holder.current.items.index_of
