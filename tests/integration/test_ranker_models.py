"""Several model versions in one ranker: the live one (LATEST) and candidates (CANDIDATES),
each request scored by the version it names, over a real gRPC server and a real Redis."""
from __future__ import annotations

import asyncio

import grpc
import pytest
from shopstream.ranker.v1 import ranker_pb2, ranker_pb2_grpc

from services.common.bundle import publish_candidate, retire_candidate, set_live
from services.common.bundle.files import EMBEDDINGS_FILE
from services.common.errors import FailedPrecondition
from services.common.stores.catalog import RedisCatalogStore
from services.gateway.metrics import gateway_metrics
from services.gateway.ranker_client import RankerClient
from services.ranker.metrics import ranker_metrics
from support.ranker_harness import ITEMS, Ranker, add_history, catalog_items, ids, vectors
from support.toy_bundle import publish_toy_bundle

pytestmark = pytest.mark.integration


def bytes_gauge(version: str, role: str) -> float | None:
    """The value of shopstream_ranker_model_bytes{version, version_role}, None when absent."""
    for metric in ranker_metrics().model_bytes.collect():
        for sample in metric.samples:
            if sample.labels == {"version": version, "version_role": role}:
                return sample.value
    return None


def loaded_gauge(role: str) -> float:
    return ranker_metrics().models_loaded.labels(role)._value.get()


@pytest.fixture
async def two_models(tmp_path, redis_client, redis_url):
    """A ranker holding a live model and one candidate that boosts b2 far above every bag."""
    await RedisCatalogStore(redis_client).upsert(catalog_items())
    live = publish_toy_bundle(tmp_path, ITEMS, vectors())
    candidate = publish_toy_bundle(tmp_path, ITEMS, vectors(boost={"b2": 5.0}), live=False)
    publish_candidate(tmp_path, candidate)
    async with Ranker(tmp_path, redis_client, redis_url) as r:
        await r.refresh_catalog()
        await r.holder.poll_once()
        assert set(r.holder.models.models) == {live, candidate}
        await add_history(r.states, "u1", ["b1"])
        yield r, live, candidate


async def rank(ranker, version: str = "", user: str = "u1", k: int = 2):
    return await ranker.stub.Rank(ranker_pb2.RankRequest(user_id=user, k=k, model_version=version), timeout=5)


async def test_each_request_is_scored_by_the_version_it_names(two_models):
    ranker, live, candidate = two_models
    by_live, by_default, by_candidate = await rank(ranker, live), await rank(ranker), await rank(ranker, candidate)
    assert by_default == by_live and by_live.model_version == live
    assert ids(by_live) == ["b4", "b3"]
    assert by_candidate.model_version == candidate and ids(by_candidate) == ["b2", "b4"]
    assert by_candidate.items[0].score == pytest.approx(1.1 * 6.2)  # b1 . boosted b2

    similar = await ranker.stub.Similar(ranker_pb2.SimilarRequest(item_id="b1", k=1, model_version=candidate),
                                        timeout=5)
    assert similar.model_version == candidate

    # One RankBatch, three versions: each answered by its own model, as Rank answers it; the
    # version that is not loaded fails only its own outcome.
    requests = [ranker_pb2.RankRequest(user_id="u1", k=2, model_version=v) for v in ("", candidate, "v-nope", live)]
    reply = await ranker.stub.RankBatch(ranker_pb2.RankBatchRequest(requests=requests), timeout=5)
    default, cand, missing, explicit = reply.results
    assert default.response == by_live and explicit.response == by_live and cand.response == by_candidate
    assert missing.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "'v-nope' is not loaded" in missing.error.message


async def test_a_version_that_is_not_loaded_is_failed_precondition_never_a_fallback(two_models):
    ranker, live, candidate = two_models
    for call in (rank(ranker, "v-unknown"),
                 ranker.stub.Similar(ranker_pb2.SimilarRequest(item_id="b1", k=1, model_version="v-unknown"),
                                     timeout=5)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details() == f"model version 'v-unknown' is not loaded; loaded: {live} (live), {candidate}"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rank(ranker, "v" * 300)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_models_reports_every_loaded_version_and_its_memory(two_models):
    ranker, live, candidate = two_models
    reply = await ranker.stub.ListModels(ranker_pb2.ListModelsRequest(), timeout=5)
    assert [(m.version, m.live) for m in reply.models] == [(live, True), (candidate, False)]
    assert reply.max_models == 3 and not reply.not_loaded
    for model in reply.models:
        assert model.catalog_items == len(ITEMS)
        assert model.embedding_bytes > 0 and model.session_bytes > 0
        assert model.total_bytes == model.embedding_bytes + model.session_bytes
    # The toy bundle's tables (13 x 4 float32 = 208 bytes each): bundle table, unit vectors and the
    # scoring graph's initializers are there, at least.
    assert reply.models[0].embedding_bytes >= 2 * 208 and reply.models[0].session_bytes >= 208
    assert bytes_gauge(live, "live") == reply.models[0].total_bytes
    assert bytes_gauge(candidate, "candidate") == reply.models[1].total_bytes
    assert loaded_gauge("live") == 1 and loaded_gauge("candidate") == 1


async def test_set_live_promotes_a_candidate_without_reloading_it(two_models, tmp_path):
    ranker, live, candidate = two_models
    loads = ranker_metrics().model_loads._value.get()
    held = ranker.holder.models.get(candidate)

    set_live(tmp_path, candidate)
    assert await ranker.holder.poll_once()
    assert ranker.holder.current is held  # the warm candidate, not a second load
    assert ranker_metrics().model_loads._value.get() == loads
    promoted = await rank(ranker)
    assert promoted.model_version == candidate and ids(promoted) == ["b2", "b4"]
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the old live model was unloaded
        await rank(ranker, live)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert bytes_gauge(live, "live") is None and bytes_gauge(candidate, "candidate") is None
    assert bytes_gauge(candidate, "live") > 0 and loaded_gauge("candidate") == 0

    # Back again, keeping the demoted version as a candidate (a rollback costs one load, then none).
    set_live(tmp_path, live, keep_previous=True)
    assert await ranker.holder.poll_once()
    reply = await ranker.stub.ListModels(ranker_pb2.ListModelsRequest(), timeout=5)
    assert [(m.version, m.live) for m in reply.models] == [(live, True), (candidate, False)]
    assert (await rank(ranker)).model_version == live and (await rank(ranker, candidate)).model_version == candidate


async def test_a_corrupt_candidate_is_refused_while_the_live_model_serves(two_models, tmp_path):
    ranker, live, candidate = two_models
    failures = ranker_metrics().model_load_failures._value.get()
    broken = publish_toy_bundle(tmp_path, ITEMS, vectors(boost={"h1": 9.0}), live=False)
    publish_candidate(tmp_path, broken)
    (tmp_path / broken / EMBEDDINGS_FILE).write_bytes(b"garbage")  # corrupted after publishing

    assert not await ranker.holder.poll_once()
    assert ranker_metrics().model_load_failures._value.get() == failures + 1
    assert set(ranker.holder.models.models) == {live, candidate}
    served = await rank(ranker)
    assert served.model_version == live and ids(served) == ["b4", "b3"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rank(ranker, broken)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "checksum mismatch" in err.value.details() and f"loaded: {live} (live), {candidate}" in err.value.details()
    reply = await ranker.stub.ListModels(ranker_pb2.ListModelsRequest(), timeout=5)
    assert [u.version for u in reply.not_loaded] == [broken] and "checksum mismatch" in reply.not_loaded[0].reason

    # Promoting the broken bundle by hand (LATEST written directly) leaves the live model live.
    (tmp_path / "LATEST").write_text(broken + "\n")
    assert not await ranker.holder.poll_once()
    assert ranker.holder.current.version == live and (await rank(ranker)).model_version == live

    retire_candidate(tmp_path, candidate)
    (tmp_path / "LATEST").write_text(live + "\n")
    assert await ranker.holder.poll_once()  # the retired candidate is unloaded
    assert set(ranker.holder.models.models) == {live}
    assert bytes_gauge(candidate, "candidate") is None and loaded_gauge("candidate") == 0


async def test_max_models_keeps_the_newest_candidates(tmp_path, redis_client, redis_url):
    await RedisCatalogStore(redis_client).upsert(catalog_items())
    live = publish_toy_bundle(tmp_path, ITEMS, vectors())
    older, newer = (publish_toy_bundle(tmp_path, ITEMS, vectors(boost={b: 1.0}), live=False) for b in ("b1", "b2"))
    publish_candidate(tmp_path, older)
    publish_candidate(tmp_path, newer)
    async with Ranker(tmp_path, redis_client, redis_url, max_models=2) as ranker:
        await ranker.holder.poll_once()
        assert set(ranker.holder.models.models) == {live, newer}
        reply = await ranker.stub.ListModels(ranker_pb2.ListModelsRequest(), timeout=5)
        assert reply.max_models == 2
        assert [(u.version, u.reason) for u in reply.not_loaded] == [
            (older, "over the limit of 2 loaded models (SHOPSTREAM_RANKER_MAX_MODELS)")]

        retire_candidate(tmp_path, newer)  # room again: the older one loads on the next poll
        assert await ranker.holder.poll_once()
        assert set(ranker.holder.models.models) == {live, older}


async def test_the_gateways_ranker_client_lists_models_and_passes_the_version_through(two_models):
    ranker, live, candidate = two_models
    client = RankerClient(ranker_pb2_grpc.RankerServiceStub(ranker.channel), gateway_metrics())
    try:
        listed = await client.list_models(timeout=5)
        assert [(m.version, m.live) for m in listed.models] == [(live, True), (candidate, False)]
        # Concurrent calls leave in one RankBatch, each keeping its own model_version.
        answers = await asyncio.gather(*(client.rank(ranker_pb2.RankRequest(user_id="u1", k=1, model_version=v),
                                                     timeout=5) for v in ("", candidate, live)),
                                       return_exceptions=True)
        assert [(a.model_version, ids(a)) for a in answers] == [(live, ["b4"]), (candidate, ["b2"]), (live, ["b4"])]
        with pytest.raises(FailedPrecondition, match="'v-gone' is not loaded"):  # not RankerFailed: no fallback
            await client.rank(ranker_pb2.RankRequest(user_id="u1", k=1, model_version="v-gone"), timeout=5)
    finally:
        await client.close()


async def until(check, what: str, timeout: float = 20.0) -> None:
    """Await ``check()`` turning true (the event loop keeps running the ranker meanwhile)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.02)


async def test_the_reload_loop_picks_up_candidates_and_promotions_without_a_restart(tmp_path, redis_client, redis_url):
    """No manual poll: the ranker's own reload task (every 50 ms here) follows the two files."""
    await RedisCatalogStore(redis_client).upsert(catalog_items())
    live = publish_toy_bundle(tmp_path, ITEMS, vectors())
    async with Ranker(tmp_path, redis_client, redis_url, reload_interval_s=0.05) as ranker:
        await until(lambda: ranker.holder.current is not None, what="the live model")
        candidate = publish_toy_bundle(tmp_path, ITEMS, vectors(boost={"b2": 5.0}), live=False)
        publish_candidate(tmp_path, candidate)
        await until(lambda: ranker.holder.models.get(candidate) is not None, what="the candidate loaded")
        set_live(tmp_path, candidate)
        await until(lambda: ranker.holder.models.live_version == candidate, what="the promotion")
        await until(lambda: set(ranker.holder.models.models) == {candidate}, what="the old live unloaded")
        assert live not in ranker.holder.models.models
