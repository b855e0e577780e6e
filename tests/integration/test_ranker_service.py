"""The ranker as a real gRPC server on 127.0.0.1:0 with a real (embedded) Redis
and real model bundles published through the bundle writer."""
from __future__ import annotations

import json
import shutil

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from shopstream.catalog.v1 import catalog_pb2
from shopstream.ranker.v1 import ranker_pb2

from services.common.grpc_server import LIVENESS
from services.common.bundle.files import sha256_file, write_latest
from services.common.stores.catalog import RedisCatalogStore
from services.common.stores.user_state import EmbeddingWrite
from services.ranker.metrics import ranker_metrics
from services.ranker.server import SERVICE_NAMES
from support.ranker_harness import ITEMS, Ranker, add_history, catalog_items, ids, vectors
from support.toy_bundle import publish_toy_bundle

pytestmark = pytest.mark.integration

@pytest.fixture
async def ranker(tmp_path, redis_client, redis_url):
    await RedisCatalogStore(redis_client).upsert(catalog_items(out_of_stock={"s3"}))
    publish_toy_bundle(tmp_path, ITEMS, vectors())
    async with Ranker(tmp_path, redis_client, redis_url) as r:
        await r.refresh_catalog()
        await r.load_model()
        yield r


async def test_health_not_serving_until_a_model_is_loaded(tmp_path, redis_client, redis_url):
    async with Ranker(tmp_path, redis_client, redis_url) as r:
        assert await r.status() == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await r.status(SERVICE_NAMES[0]) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await r.status(LIVENESS) == health_pb2.HealthCheckResponse.SERVING  # alive, not ready: no restart
        assert not await r.holder.poll_once()  # no bundle yet: keep polling, stay NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await r.stub.Rank(ranker_pb2.RankRequest(user_id="u", k=3), timeout=2)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

        version = publish_toy_bundle(tmp_path, ITEMS, vectors())
        assert await r.holder.poll_once()
        assert r.holder.current.version == version
        assert await r.status() == health_pb2.HealthCheckResponse.SERVING
        assert await r.status(SERVICE_NAMES[0]) == health_pb2.HealthCheckResponse.SERVING


async def test_rank_encodes_history_and_applies_filters(ranker):
    await add_history(ranker.states, "u1", ["s1", "s2"], purchased={"s2"})
    resp = await ranker.stub.Rank(ranker_pb2.RankRequest(
        user_id="u1", k=3, filter=ranker_pb2.ItemFilter(in_stock_only=True, exclude_purchased=True)), timeout=5)
    assert resp.user_known and resp.embedding_source == "encoded"
    assert resp.model_version == ranker.holder.current.version
    # user vector = s1 + s2 on the shoes axis: s4 > (s3 out of stock) > (s2 purchased) > s1 > the rest score 0
    assert ids(resp)[:2] == ["s4", "s1"]
    assert [round(i.score, 4) for i in resp.items[:2]] == [pytest.approx(1.4 * 2.3), pytest.approx(1.1 * 2.3)]
    assert len(resp.items) == 3

    seen = await ranker.stub.Rank(ranker_pb2.RankRequest(
        user_id="u1", k=20, filter=ranker_pb2.ItemFilter(exclude_seen=True, include_categories=["shoes"])), timeout=5)
    assert ids(seen) == ["s4", "s3"]  # in_stock_only=False: the ranker applies exactly what it is sent

    hats = await ranker.stub.Rank(ranker_pb2.RankRequest(
        user_id="u1", k=2, filter=ranker_pb2.ItemFilter(exclude_categories=["shoes", "bags"],
                                                        exclude_item_ids=["h4"])), timeout=5)
    assert set(ids(hats)) <= {"h1", "h2", "h3"} and len(hats.items) == 2


async def test_rank_uses_the_stored_embedding_of_this_model(ranker):
    await add_history(ranker.states, "u2", ["s1"])
    (state,) = await ranker.states.get_states(["u2"], 10)
    await ranker.states.put_embeddings([EmbeddingWrite("u2", ranker.holder.current.version, state.hist_version,
                                                       np.array([0, 0, 1, 0], dtype=np.float32))])
    resp = await ranker.stub.Rank(ranker_pb2.RankRequest(user_id="u2", k=2), timeout=5)
    assert resp.embedding_source == "redis"
    assert ids(resp) == ["b4", "b3"]  # the stored vector points at bags, not at the shoes in the history

    await ranker.states.put_embeddings([EmbeddingWrite("u2", "some-older-model", state.hist_version,
                                                       np.array([0, 0, 1, 0], dtype=np.float32))])
    resp = await ranker.stub.Rank(ranker_pb2.RankRequest(user_id="u2", k=1), timeout=5)
    assert resp.embedding_source == "encoded" and ids(resp) == ["s4"]


async def test_unknown_user_is_reported_not_ranked(ranker):
    resp = await ranker.stub.Rank(ranker_pb2.RankRequest(user_id="nobody", k=5), timeout=5)
    assert not resp.user_known and not resp.items
    assert resp.model_version == ranker.holder.current.version


@pytest.mark.parametrize("request_, message", [
    (ranker_pb2.RankRequest(user_id="", k=5), "user_id is required"),
    (ranker_pb2.RankRequest(user_id="u", k=5, filter=ranker_pb2.ItemFilter(include_categories=["c"] * 100_000)),
     "filter.include_categories has 100000 entries, at most 100 allowed"),
    (ranker_pb2.RankRequest(user_id="u", k=0), "k must be between 1 and 50, got 0"),
    (ranker_pb2.RankRequest(user_id="u", k=51), "k must be between 1 and 50, got 51"),
])
async def test_invalid_requests(ranker, request_, message):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ranker.stub.Rank(request_, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == message


async def test_rank_batch_answers_each_request_as_rank_would(ranker):
    await add_history(ranker.states, "u1", ["s1", "s2"], purchased={"s2"})
    await add_history(ranker.states, "u3", ["h1"])
    flt = ranker_pb2.ItemFilter(in_stock_only=True, exclude_purchased=True)
    requests = [
        ranker_pb2.RankRequest(user_id="u1", k=3, filter=flt),
        ranker_pb2.RankRequest(user_id="", k=3),  # invalid: fails alone
        ranker_pb2.RankRequest(user_id="nobody", k=3),  # unknown: answered, not ranked
        ranker_pb2.RankRequest(user_id="u3", k=99),  # invalid k
        ranker_pb2.RankRequest(user_id="u3", k=2, filter=flt),
        ranker_pb2.RankRequest(user_id="u1", k=3, filter=flt),  # a repeat gets the same answer
    ]
    reply = await ranker.stub.RankBatch(ranker_pb2.RankBatchRequest(requests=requests), timeout=5)
    assert len(reply.results) == len(requests)
    one_by_one = [await ranker.stub.Rank(requests[i], timeout=5) for i in (0, 2, 4)]
    ok, bad_id, unknown, bad_k, hats, repeat = reply.results
    assert ok.response == one_by_one[0] and repeat.response == one_by_one[0]
    assert ids(ok.response)[:2] == ["s4", "s1"]
    assert unknown.response == one_by_one[1] and not unknown.response.user_known
    assert hats.response == one_by_one[2] and ids(hats.response)[0] == "h4"
    assert (bad_id.error.code, bad_id.error.message) == (grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                                         "user_id is required")
    assert (bad_k.error.code, bad_k.error.message) == (grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                                       "k must be between 1 and 50, got 99")
    assert not ok.HasField("error") and not bad_id.HasField("response")

    empty = await ranker.stub.RankBatch(ranker_pb2.RankBatchRequest(), timeout=5)
    assert len(empty.results) == 0
    too_many = [ranker_pb2.RankRequest(user_id=f"u{n}", k=1) for n in range(ranker.settings.rank_batch_max_requests + 1)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ranker.stub.RankBatch(ranker_pb2.RankBatchRequest(requests=too_many), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 256 requests per RankBatch" in err.value.details()


async def test_similar_is_cosine_and_unknown_item_is_not_found(ranker):
    resp = await ranker.stub.Similar(ranker_pb2.SimilarRequest(item_id="h1", k=3), timeout=5)
    assert set(ids(resp)) == {"h2", "h3", "h4"}
    assert all(i.score == pytest.approx(1.0) for i in resp.items)
    in_stock = await ranker.stub.Similar(ranker_pb2.SimilarRequest(
        item_id="s1", k=3, filter=ranker_pb2.ItemFilter(in_stock_only=True)), timeout=5)
    assert "s3" not in ids(in_stock) and "s1" not in ids(in_stock)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ranker.stub.Similar(ranker_pb2.SimilarRequest(item_id="nope", k=3), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_catalog_changes_rebuild_the_masks(ranker):
    await add_history(ranker.states, "u3", ["h1"])
    before = await ranker.stub.Rank(ranker_pb2.RankRequest(
        user_id="u3", k=1, filter=ranker_pb2.ItemFilter(in_stock_only=True)), timeout=5)
    assert ids(before) == ["h4"]
    await RedisCatalogStore(ranker.redis).upsert([catalog_pb2.CatalogItem(item_id="h4", category="hats")])
    await ranker.refresh_catalog()
    after = await ranker.stub.Rank(ranker_pb2.RankRequest(
        user_id="u3", k=1, filter=ranker_pb2.ItemFilter(in_stock_only=True)), timeout=5)
    assert ids(after) == ["h3"]


async def test_hot_reload_swaps_versions_and_survives_a_broken_bundle(ranker, tmp_path):
    await add_history(ranker.states, "u4", ["b1"])
    old = ranker.holder.current.version
    failures = ranker_metrics().model_load_failures._value.get()

    broken = tmp_path / "v-broken"
    shutil.copytree(tmp_path / old, broken)
    (broken / "item_embeddings.npy").write_bytes(b"garbage")  # checksum mismatch
    write_latest(tmp_path, "v-broken")
    assert not await ranker.holder.poll_once()
    assert ranker.holder.current.version == old
    assert ranker_metrics().model_load_failures._value.get() == failures + 1
    resp = await ranker.stub.Rank(ranker_pb2.RankRequest(user_id="u4", k=1), timeout=5)
    assert resp.model_version == old and ids(resp) == ["b4"]

    # Consistent checksums, NaN scores: refused by validation, not served.
    poisoned = tmp_path / "v-nan"
    shutil.copytree(tmp_path / old, poisoned)
    np.save(poisoned / "item_embeddings.npy", np.full((len(ITEMS) + 1, 4), np.nan, dtype=np.float32))
    meta = json.loads((poisoned / "metadata.json").read_text())
    meta["files"]["item_embeddings.npy"] = sha256_file(poisoned / "item_embeddings.npy")
    (poisoned / "metadata.json").write_text(json.dumps(meta))
    write_latest(tmp_path, "v-nan")
    assert not await ranker.holder.poll_once()
    assert ranker.holder.current.version == old
    assert ranker_metrics().model_load_failures._value.get() == failures + 2
    resp = await ranker.stub.Rank(ranker_pb2.RankRequest(user_id="u4", k=1), timeout=5)
    assert resp.model_version == old and ids(resp) == ["b4"] and np.isfinite(resp.items[0].score)

    new = publish_toy_bundle(tmp_path, ITEMS, vectors(boost={"b2": 5.0}))
    assert new != old
    assert await ranker.holder.poll_once()
    resp = await ranker.stub.Rank(ranker_pb2.RankRequest(user_id="u4", k=1), timeout=5)
    assert resp.model_version == new and ids(resp) == ["b2"]
    assert await ranker.status() == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("method", ["Rank", "RankBatch", "Similar"])
async def test_undecodable_request_bytes_are_invalid_argument(ranker, method):
    call = ranker.channel.unary_unary(f"/shopstream.ranker.v1.RankerService/{method}",
                                      request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(b"\xff\xff\xff", timeout=5)  # a truncated varint: not a protobuf message
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("the request is not a valid shopstream.ranker.v1.")
