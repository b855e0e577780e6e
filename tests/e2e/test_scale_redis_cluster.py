"""The whole loop on a Redis Cluster: three valkey masters in cluster mode, every service
given ``REDIS_URL=redis+cluster://…``. Events are applied once even when delivered twice,
recommendations are personalized, trending and the catalog are readable, and no service
logs a CROSSSLOT (or any other cluster routing) error."""
from __future__ import annotations

import uuid

import grpc
import pytest
import redis
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.stores import keys
from services.contract.producer import ensure_topics
from services.ingest.catalog import catalog_from_docs
from services.stack.local import ServiceStack
from services.stack.redis_cluster import EmbeddedRedisCluster
from support.helpers import event, recommend, wait_for

# Starts its own processes (a cluster and a whole stack) on top of the
# session fixtures, which train a model when this test runs first: slow on a loaded machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CLUSTER_ERRORS = ("CROSSSLOT", "MOVED", "ASK ", "ClusterDownError", "RedisClusterException", "Traceback")


@pytest.fixture(scope="module")
def cluster():
    with EmbeddedRedisCluster(masters=3) as c:
        yield c


@pytest.fixture(scope="module")
def cluster_client(cluster):
    client = redis.RedisCluster.from_url("redis://" + cluster.url.split("://", 1)[1])
    yield client
    client.close()


@pytest.fixture(scope="module")
def cluster_stack(cluster, cluster_client, kafka_bootstrap, models_dir, dataset, producer, tmp_path_factory):
    ensure_topics(kafka_bootstrap, partitions=4)
    env = {"SHOPSTREAM_FEATURES_TRENDING_DECAY_INTERVAL_S": "3600",
           "SHOPSTREAM_RANKER_EXECUTOR_THREADS": "2",
           # A group of its own; it starts at the end of the log (the catalog is re-sent below).
           "SHOPSTREAM_FEATURES_APP_ID": f"shopstream-features-cluster-{uuid.uuid4().hex[:6]}"}
    stack = ServiceStack(kafka_bootstrap, cluster.url, models_dir, tmp_path_factory.mktemp("cluster-logs"),
                         partitions=4, extra_env=env)
    try:
        stack.start_service("features")
        producer.send_catalog(catalog_from_docs(dataset.catalog))
        ids = [item["item_id"] for item in dataset.catalog]
        wait_for(lambda: all(cluster_client.hmget(keys.CATALOG_ITEMS, ids)), timeout=30.0, interval=0.1,
                 what="the catalog in the cluster")
        stack.start_service("ranker")
        stack.start_service("gateway")
        yield stack
    finally:
        stack.stop()


def test_the_loop_runs_on_a_redis_cluster(cluster, cluster_client, cluster_stack, producer, catalog_items):
    # Users whose keys land on every master (their hash tags hash to different slots): 4 per
    # master, picked by the slot owner (12 random ones left a master out about 1 run in 40).
    tag, per_master, users = uuid.uuid4().hex[:6], {}, []
    for n in range(10_000):  # bounded: a master without slots fails the assertion below
        if len(users) == 4 * len(cluster.masters):
            break
        user = f"cl-{tag}-{n}"
        port = cluster_client.get_node_from_key(keys.history(user)).port
        if per_master.setdefault(port, 0) < 4:
            per_master[port] += 1
            users.append(user)
    slots = {cluster_client.keyslot(keys.history(u)) for u in users}
    owners = {cluster_client.get_node_from_key(keys.history(u)).port for u in users}
    assert len(owners) == len(cluster.masters), f"users on {len(owners)} masters only ({len(slots)} slots)"

    events = [event(u, catalog_items[(5 * n + i) % len(catalog_items)], "PURCHASE" if i == 2 else "CLICK")
              for n, u in enumerate(users) for i in range(4)]
    producer.send_events(events, wait=True)
    producer.send_events(events[::2], wait=True)  # redelivered: must not apply again

    def applied():
        return all(cluster_client.llen(keys.history(u)) == 4 for u in users)
    wait_for(applied, timeout=30.0, what="every user's four events applied")

    with grpc.insecure_channel(cluster_stack.gateway_addr) as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        answers = wait_for(lambda: (a := [recommend(gateway, u) for u in users])
                           and all(r.strategy == gateway_pb2.STRATEGY_PERSONALIZED for r in a) and a,
                           timeout=30.0, what="personalized answers from the cluster's state")
        assert all(len(r.items) == 10 and not r.degraded for r in answers)
        # A purchased item is excluded from that user's own recommendations (read from the cluster).
        for n, (u, r) in enumerate(zip(users, answers)):
            bought = catalog_items[(5 * n + 2) % len(catalog_items)]
            assert bought not in {i.item_id for i in r.items}, u
        newcomer = recommend(gateway, f"cl-new-{uuid.uuid4().hex[:6]}")
        assert newcomer.strategy == gateway_pb2.STRATEGY_TRENDING and len(newcomer.items) == 10

    # Applied exactly once, after the redelivery had every chance to land (it was sent
    # before the answers above, which needed the later events of each user).
    for u in users:
        assert cluster_client.llen(keys.history(u)) == 4, u
        assert cluster_client.zcard(keys.dedup(u)) == 4, u
        counts = cluster_client.hgetall(keys.counters(u))
        assert int(counts[b"events"]) == 4 and int(counts[b"hist_version"]) == 4, (u, counts)
    trending = cluster_client.zrevrange(keys.TRENDING, 0, 9, withscores=True)
    assert len(trending) == 10 and trending[0][1] > 0
    # Every item of the dataset's catalog (the session's catalog topic may hold other tests' items too).
    assert all(cluster_client.hmget(keys.CATALOG_ITEMS, catalog_items))

    for name, proc in cluster_stack.processes.items():
        log = proc.log_path.read_text(errors="replace")
        found = [e for e in CLUSTER_ERRORS if e in log]
        assert not found, f"{name} logged {found}:\n{proc.tail(40)}"
