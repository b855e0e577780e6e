"""Two features workers in one consumer group on a 4-partition events topic: the load
splits between them, and when one is SIGKILLed the other takes over its partitions;
Redis ends equal to the oracle of acknowledged events (0 lost, 0 double-applied).

The publisher, the oracle and the worker settings are the fault suite's (tests/faults/harness.py).
"""
from __future__ import annotations

import uuid

import numpy as np
import pytest
import redis

from faults.harness import CATALOG, WORKER_ENV, Publisher, PublishingThread, all_applied, compare, wait_until
from services.contract.producer import ensure_topics
from services.stack.embedded import EmbeddedKafka, EmbeddedRedis
from services.stack.local import ServiceStack
from services.stack.processes import metric_value, metrics_text
from support.toy_bundle import publish_toy_bundle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PARTITIONS = 4
APPLIED = "shopstream_features_events_applied_total"
ASSIGNED = "shopstream_features_assigned_partitions"


def metric(stack: ServiceStack, name: str) -> float:
    text = metrics_text(stack.ports["features_metrics"], timeout=5, names=[name])
    return (metric_value(text, name) or 0.0) if text else 0.0


@pytest.fixture
def group(tmp_path):
    """A broker and Redis of the test's own and two worker stacks sharing one group id."""
    models = tmp_path / "models"
    publish_toy_bundle(models, CATALOG, np.random.default_rng(0).normal(size=(len(CATALOG), 8)))
    with EmbeddedKafka() as kafka, EmbeddedRedis(data_dir=tmp_path / "redis") as server:
        ensure_topics(kafka.bootstrap_servers, partitions=PARTITIONS)
        env = {**WORKER_ENV, "SHOPSTREAM_FEATURES_APP_ID": f"scale-{uuid.uuid4().hex[:8]}"}
        workers = [ServiceStack(kafka.bootstrap_servers, server.url, models, tmp_path / f"worker-{n}",
                                partitions=PARTITIONS, extra_env=env) for n in range(2)]
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        try:
            yield kafka, client, workers
        finally:
            for stack in reversed(workers):
                stack.stop()
            client.close()


def test_two_workers_split_the_partitions_and_one_takes_over_after_a_sigkill(group):
    kafka, client, (first, second) = group
    first.start_service("features", timeout=90)
    second.start_service("features", timeout=90)
    # Both in the group: the rebalance gives each a share of every topic's partitions.
    total = wait_until(lambda: (a := metric(first, ASSIGNED)) > 0 and (b := metric(second, ASSIGNED)) > 0
                       and a + b, 60, "both workers holding partitions")

    publisher = Publisher(kafka.bootstrap_servers, [f"user-{n}" for n in range(24)])
    thread = PublishingThread(publisher, 1600, 400.0)
    wait_until(lambda: metric(first, APPLIED) >= 100 and metric(second, APPLIED) >= 100, 60,
               "both workers applying")
    split = (metric(first, APPLIED), metric(second, APPLIED))

    killed = second.processes.pop("features")
    killed.proc.kill()  # SIGKILL: no commit, no leave-group; the group notices at the session timeout
    killed.proc.wait()
    wait_until(lambda: metric(first, ASSIGNED) == total, 60, f"the survivor holding all {total:.0f} partitions")

    thread.join()
    acked, unacked = publisher.outcome()
    assert not unacked
    wait_until(lambda: all_applied(client, acked), 90, "every acknowledged event applied")
    report = compare(client, acked, unacked)
    survivor = metric(first, APPLIED)
    print(f"applied when both ran: {split[0]:.0f} / {split[1]:.0f}; after the SIGKILL the survivor holds "
          f"{total:.0f} partitions and applied {survivor:.0f} in all; {report}")
    assert (report.lost, report.doubled, report.mismatches) == ([], [], [])
    assert report.applied == len(acked) == 1600
    # Each worker applied its share while both ran, the survivor the rest.
    assert min(split) >= 100 and survivor > split[0]
    publisher.close()
