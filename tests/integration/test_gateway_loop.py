"""The gateway's side of the closed loop, against a real ranker holding two model versions,
real (embedded) Redis and Kafka: served lists with identity, impressions on their topic,
experiments (assignment, trending arm, shadow), definitions refused or kept."""
from __future__ import annotations

import asyncio
import contextlib
import json

import grpc
import pytest
from aiokafka import AIOKafkaProducer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka.partitioner.default import murmur2
from prometheus_client import REGISTRY
from shopstream.events.v1 import events_pb2
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from support.kafka import read_topic_async
from support.ranker_harness import ITEMS, Ranker, add_history, catalog_items, ids, vectors
from support.toy_bundle import publish_toy_bundle

from services.common.bundle import publish_candidate
from services.common.stores.catalog import RedisCatalogStore
from services.contract import impressions as contract_impressions
from services.contract import topics
from services.contract.producer import ensure_topics
from services.experiments import cli as experiments_cli
from services.experiments.assignment import Assigner
from services.experiments.store import DEFINITIONS, VERSION, ExperimentStore
from services.gateway.main import build, running
from services.gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30
USERS = [f"u{n}" for n in range(12)]


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(check, what: str, timeout: float = HANG_GUARD_S):
    """Await ``check()`` (sync) becoming truthy; the bound is only reached by a hang."""
    async with asyncio.timeout(timeout):
        while not (result := check()):
            await asyncio.sleep(0.02)
    return result


@pytest.fixture
async def world(tmp_path, redis_client, redis_url):
    """Catalog, trending and users in Redis; a ranker holding a live model and a candidate that
    ranks bags differently (b2 boosted)."""
    await RedisCatalogStore(redis_client).upsert(catalog_items())
    await redis_client.zadd(b"ss:v1:trending", {"s1": 9.0, "h2": 8.0, "b3": 7.0, "s4": 6.0})
    live = publish_toy_bundle(tmp_path, ITEMS, vectors())
    candidate = publish_toy_bundle(tmp_path, ITEMS, vectors(boost={"b2": 5.0, "h1": 3.0}), live=False)
    publish_candidate(tmp_path, candidate)
    async with Ranker(tmp_path, redis_client, redis_url) as ranker:
        await ranker.refresh_catalog()
        await ranker.holder.poll_once()
        for n, user in enumerate(USERS):
            await add_history(ranker.states, user, [ITEMS[n % len(ITEMS)], ITEMS[(n * 5 + 1) % len(ITEMS)]])
        yield ranker, live, candidate


@contextlib.asynccontextmanager
async def gateway(ranker, redis_url, kafka=None, **overrides):
    """The gateway through its own build and running, once SERVING; yields (stub, deps)."""
    settings = GatewaySettings(addr="127.0.0.1:0", ranker_addr=f"127.0.0.1:{ranker.port}", redis_url=redis_url,
                               auth="disabled", readiness_interval_s=0.05, grace_s=0.0, redis_timeout_s=5.0,
                               ranker_timeout_s=5.0, experiments_poll_s=0.05,
                               **({"kafka_bootstrap_servers": kafka} if kafka else {}), **overrides)
    deps = build(settings)
    async with running(settings, deps) as gw, grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        async for reply in health.Watch(health_pb2.HealthCheckRequest(), timeout=HANG_GUARD_S):
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                break
        yield gateway_pb2_grpc.GatewayServiceStub(channel), deps


async def recommend(stub, user: str, k: int = 4) -> gateway_pb2.RecommendResponse:
    return await stub.Recommend(gateway_pb2.RecommendRequest(user_id=user, k=k), timeout=HANG_GUARD_S)


def listed(resp) -> list[tuple[str, float]]:
    return [(i.item_id, i.score) for i in resp.items]


async def test_answers_have_identity_and_every_one_is_published_as_an_impression(world, redis_url, kafka_bootstrap):
    ranker, live, _ = world
    await asyncio.to_thread(ensure_topics, kafka_bootstrap, 2)
    published_before = sample("shopstream_gateway_impressions_published_total")
    async with gateway(ranker, redis_url, kafka_bootstrap) as (gw, deps):
        answers = [await recommend(gw, user) for user in USERS]
        answers.append(unknown := await recommend(gw, "a-new-visitor"))
        similar = await gw.SimilarItems(gateway_pb2.SimilarItemsRequest(item_id="b1", k=3), timeout=HANG_GUARD_S)
        rec_ids = [a.recommendation_id for a in answers] + [similar.recommendation_id]
        assert len(set(rec_ids)) == len(rec_ids) and all(len(r) == 32 for r in rec_ids)
        assert all(a.variant == live == a.model_version and a.experiment == "" for a in answers[:-1])
        assert unknown.strategy == gateway_pb2.STRATEGY_TRENDING and unknown.variant == "trending"
        assert not unknown.degraded
        assert similar.variant == live
        await until(lambda: sample("shopstream_gateway_impressions_published_total") - published_before
                    >= len(rec_ids), "impressions acknowledged")

    # One ImpressionBatch record per partition per publish, marked by its header, holding the
    # lists of users whose key maps to that partition (other tests' records share the topic).
    records = await read_topic_async(kafka_bootstrap, topics.IMPRESSIONS)
    served = {imp.recommendation_id: (record, imp) for record in records
              for imp in contract_impressions.decode(record.value, record.headers)}
    for answer, user in zip(answers, USERS + ["a-new-visitor"]):
        record, imp = served[answer.recommendation_id]
        assert contract_impressions.is_batch(record.headers) and record.key is None
        assert imp.user_id == user
        assert list(imp.item_ids) == ids(answer) and imp.variant == answer.variant
        assert imp.surface == "recommend" and imp.served_at.seconds > 0 and imp.experiment == ""
    record, imp = served[similar.recommendation_id]
    assert contract_impressions.is_batch(record.headers)
    assert imp.user_id == "" and imp.surface == "similar" and list(imp.item_ids) == ids(similar)

    # Partitioned like the events (the Java client's murmur2 partitioner on the user id), so with
    # the same partition count (ensure_topics, or the gateway creating the topic from the events'
    # count) a user's impressions and events share a partition number.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        count = len(await producer.partitions_for(topics.IMPRESSIONS))
    finally:
        await producer.stop()
    for answer, user in zip(answers, USERS):
        assert served[answer.recommendation_id][0].partition == (murmur2(user.encode()) & 0x7FFFFFFF) % count


async def test_impression_logging_off_publishes_nothing(world, redis_url):
    ranker, _, _ = world
    async with gateway(ranker, redis_url, impressions_enabled=False) as (gw, deps):
        resp = await recommend(gw, USERS[0])
        assert resp.recommendation_id and deps.impressions is None


async def test_experiment_assigns_variants_and_the_shadow_never_leaks(world, redis_client, redis_url):
    ranker, live, candidate = world
    store = ExperimentStore(redis_client)
    async with gateway(ranker, redis_url, impressions_enabled=False) as (gw, deps):
        before = {u: await recommend(gw, u) for u in USERS}

        # One served variant (the live model) and the candidate as shadow: the answers are
        # the same lists as without the experiment, now labelled with it.
        loaded = await asyncio.to_thread(experiments_cli.loaded_model_versions, f"127.0.0.1:{ranker.port}")
        assert loaded == {live, candidate}
        await store.set({"name": "shadowed", "variants": [
            {"name": "control", "kind": "model", "model_version": live, "weight": 1},
            {"name": "next", "kind": "shadow", "model_version": candidate}]}, loaded)
        await until(lambda: deps.experiments.live.experiment is not None, "experiment picked up")
        scored_before = sample("shopstream_gateway_shadow_requests_total", outcome="scored")
        overlap_before = sample("shopstream_gateway_shadow_overlap_ratio_count")
        during = {u: await recommend(gw, u) for u in USERS}
        for u in USERS:
            assert listed(during[u]) == listed(before[u]), u
            assert (during[u].variant, during[u].experiment, during[u].model_version) == ("control", "shadowed", live)
        await until(lambda: sample("shopstream_gateway_shadow_requests_total", outcome="scored") - scored_before
                    >= len(USERS), "every request shadow-scored")
        assert sample("shopstream_gateway_shadow_overlap_ratio_count") - overlap_before >= len(USERS)
        assert sample("shopstream_gateway_shadow_duration_seconds_count") >= len(USERS)
        # The candidate ranks differently somewhere, so the overlap is below 1 for someone.
        assert sample("shopstream_gateway_shadow_overlap_ratio_sum") < \
            sample("shopstream_gateway_shadow_overlap_ratio_count")

        # End it; a model arm and a trending arm, assigned by the stable hash.
        await store.promote("shadowed", "control")
        definition = {"name": "model-vs-trending", "variants": [
            {"name": "candidate", "kind": "model", "model_version": candidate, "weight": 1},
            {"name": "rule", "kind": "trending", "weight": 1}]}
        experiment = await store.set(definition, loaded)
        await until(lambda: (e := deps.experiments.live.experiment) is not None and e.name == "model-vs-trending",
                    "second experiment picked up")
        assigner = Assigner(experiment)
        arms = set()
        for u in USERS:
            resp = await recommend(gw, u)
            arm = assigner.assign(u)
            arms.add(arm.name)
            assert (resp.variant, resp.experiment) == (arm.name, "model-vs-trending") and not resp.degraded
            if arm.kind == "trending":
                assert resp.strategy == gateway_pb2.STRATEGY_TRENDING
            else:
                assert resp.strategy == gateway_pb2.STRATEGY_PERSONALIZED and resp.model_version == candidate
        assert arms == {"candidate", "rule"}

        # A malformed definition written past the store: the previous one stays live, counted.
        errors_before = sample("shopstream_gateway_experiment_config_errors_total", reason="malformed")
        await redis_client.hset(DEFINITIONS, "model-vs-trending",
                                json.dumps({**definition, "variants": [{**definition["variants"][0], "weight": -5},
                                                                       definition["variants"][1]]}))
        await redis_client.incr(VERSION)
        await until(lambda: sample("shopstream_gateway_experiment_config_errors_total", reason="malformed")
                    > errors_before, "malformed definition counted")
        for u in USERS[:4]:
            assert (await recommend(gw, u)).variant == assigner.assign(u).name


async def test_cli_refuses_unknown_model_versions_and_bad_definitions(world, redis_client, redis_url, capsys):
    ranker, live, candidate = world
    base = ["--redis", redis_url]
    ranker_addr = ["--ranker", f"127.0.0.1:{ranker.port}"]

    def run(*argv: str) -> int:
        return experiments_cli.main([*base, *argv])

    unknown = json.dumps({"name": "ab", "variants": [
        {"name": "a", "kind": "model", "model_version": live, "weight": 1},
        {"name": "b", "kind": "model", "model_version": "v-not-there", "weight": 1}]})
    assert await asyncio.to_thread(run, "set", "--json", unknown, *ranker_addr) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "variants[1] (b): model_version 'v-not-there'" in err and live in err

    typo = json.dumps({"name": "ab", "variants": [{"name": "a", "kind": "trending", "wieght": 1}]})
    assert await asyncio.to_thread(run, "set", "--json", typo) == 1
    assert "variants[0].wieght: unknown field" in capsys.readouterr().err
    assert await ExperimentStore(redis_client).list() == []

    good = json.dumps({"name": "ab", "variants": [
        {"name": "a", "kind": "model", "model_version": live, "weight": 3},
        {"name": "t", "kind": "trending", "weight": 1},
        {"name": "s", "kind": "shadow", "model_version": candidate}]})
    assert await asyncio.to_thread(run, "set", "--json", good, *ranker_addr) == 0
    assert "stored: ab [running]: a 75.0%" in capsys.readouterr().out
    assert await asyncio.to_thread(run, "list") == 0
    assert "ab [running]" in capsys.readouterr().out
    assert await asyncio.to_thread(run, "show", "ab") == 0
    assert json.loads(capsys.readouterr().out)["variants"][2]["kind"] == "shadow"
    # A model winner needs the models directory (it becomes LATEST there).
    assert await asyncio.to_thread(run, "promote", "ab", "s") == 1
    assert "--models-dir" in capsys.readouterr().err
    assert await asyncio.to_thread(run, "promote", "ab", "s", "--models-dir", str(ranker.settings.models_dir)) == 0
    assert "promoted: s of ab" in capsys.readouterr().out
    assert (ranker.settings.models_dir / "LATEST").read_text().strip() == candidate
    default = await ExperimentStore(redis_client).default()
    assert (default.variant, default.model_version) == ("s", candidate)


async def test_the_contract_producer_sends_impressions_keyed_by_user(kafka_bootstrap):
    # For tools and tests that publish impressions themselves (the gateway has its own producer).
    from services.contract.producer import EventProducer

    await asyncio.to_thread(ensure_topics, kafka_bootstrap, 2)
    imp = events_pb2.Impression(recommendation_id="contract-producer-1", user_id="u-contract", item_ids=["a"])
    with EventProducer(kafka_bootstrap, timeout_s=10) as producer:
        assert await asyncio.to_thread(producer.send_impressions, [imp]) == 1
        with pytest.raises(Exception, match="recommendation_id is required"):
            producer.send_impressions([events_pb2.Impression(user_id="u-contract")])
    records = [r for r in await read_topic_async(kafka_bootstrap, topics.IMPRESSIONS) if r.key == b"u-contract"]
    assert [events_pb2.Impression.FromString(r.value) for r in records] == [imp]
