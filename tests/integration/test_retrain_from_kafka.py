"""``shopstream retrain`` against a real embedded broker of the test's own: it reads exactly
the events published (each event id once, invalid records skipped), or exactly those of a
time window, trains a candidate, publishes it beside the live model (LATEST unchanged),
and the candidate loads the way the ranker loads it."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import numpy as np
import pytest
from support.helpers import wait_for
from support.toy_bundle import publish_toy_bundle

from services.common.bundle import candidate_versions, latest_version, load_bundle
from services.contract import topics
from services.contract.producer import EventProducer, ensure_topics
from services.ingest.catalog import catalog_from_docs
from services.ingest.replay import to_events
from services.ingest.synthetic import SyntheticConfig, generate
from services.training import from_kafka

pytestmark = pytest.mark.integration

TINY = ["--epochs", "1", "--dim", "16", "--blocks", "1", "--heads", "1", "--threads", "1",
        "--parity-users", "20"]


def _now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def shop():
    return generate(SyntheticConfig(users=80, items=50, categories=4, seed=21))


def test_retrain_reads_the_log_and_publishes_a_candidate(restartable_kafka, shop, tmp_path):
    kafka = restartable_kafka.bootstrap_servers
    ensure_topics(kafka, partitions=3)
    users = list(shop.sequences)
    first = {u: shop.sequences[u] for u in users[:50]}
    second = {u: shop.sequences[u] for u in users[50:]}
    with EventProducer(kafka) as producer:
        producer.send_catalog(catalog_from_docs(shop.catalog))
        batch1 = list(to_events(first, namespace="first"))
        producer.send_events(batch1)
        producer.send_events(batch1[:7])  # redelivered: the same event ids again
        producer.send_raw(topics.EVENTS, b"u1", b"not an event")
        producer.send_raw(topics.EVENTS, b"u2", b'{"event_id": "x"}')
        producer.flush()
        # Record timestamps are milliseconds: the boundary lies in a millisecond after every
        # record of the first part, and the second part starts in a later one.
        flushed_ms = _now_ms()
        wait_for(lambda: _now_ms() >= flushed_ms + 2, timeout=1.0, what="a millisecond after the first part")
        boundary = datetime.now(timezone.utc)
        wait_for(lambda: _now_ms() >= int(boundary.timestamp() * 1000) + 2, timeout=1.0,
                 what="the clock to pass the window boundary")
        batch2 = list(to_events(second, namespace="second"))
        producer.send_events(batch2)
        producer.flush()

    models = tmp_path / "models"
    ids = [it["item_id"] for it in shop.catalog]
    live = publish_toy_bundle(models, ids, np.random.default_rng(0).normal(size=(len(ids), 8)))

    result = from_kafka.retrain(kafka, models, tmp_path / "out", TINY)
    events = result.comparison["events"]
    assert events["read"] == len(batch1) + 7 + 2 + len(batch2)
    assert events["kept"] == len(batch1) + len(batch2)
    assert (events["duplicates"], events["invalid"]) == (7, 2)
    rows = [json.loads(line) for line in (tmp_path / "out" / from_kafka.EVENTS_FILE).read_text().splitlines()]
    assert {r["event_id"] for r in rows} <= {e.event_id for e in batch1 + batch2}
    assert result.comparison["attributes"] == len(shop.catalog)

    assert latest_version(models) == live == result.live  # the live model stays live
    assert candidate_versions(models) == [result.candidate]
    bundle = load_bundle(models, result.candidate, prefer_gpu=False, intra_op_threads=1)
    assert set(bundle.item_ids) <= set(ids)
    assert bundle.encode([shop.sequences[users[0]][:-1]]).shape == (1, bundle.dim)
    for role in ("candidate", "live"):
        holdout = result.comparison["models"][role]["holdout"]
        assert holdout["users"] == result.comparison["holdout"]["users"] > 0
        assert 0.0 <= holdout["ndcg@10"] <= holdout["hr@10"] <= holdout["hr@20"] <= 1.0
    assert json.loads((tmp_path / "out" / from_kafka.RESULT_FILE).read_text())["models"]["candidate"]["version"] \
        == result.candidate

    # The command, over a window: only what was published after the boundary.
    assert from_kafka.main(["--kafka", kafka, "--models-dir", str(models), "--out", str(tmp_path / "window"),
                            "--since", boundary.isoformat(), "--log-level", "WARNING", *TINY]) == 0
    window = json.loads((tmp_path / "window" / from_kafka.RESULT_FILE).read_text())
    assert window["events"]["read"] == window["events"]["kept"] == len(batch2)
    assert candidate_versions(models) == [result.candidate, window["models"]["candidate"]["version"]]
    assert latest_version(models) == live


def test_reading_an_absent_topic_finds_nothing(restartable_kafka):
    import asyncio

    log = asyncio.run(from_kafka.read_events(restartable_kafka.bootstrap_servers, topic="no.such.topic"))
    assert (log.read, log.rows) == (0, [])
