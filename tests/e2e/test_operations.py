"""What ops see: every metric the alert rules and the dashboard use is exported by the running
services, the scrape config targets each service, and Debian's Prometheus (when it is here:
``make check-deploy`` unpacks it under var/promtool) scrapes the live stack with the project's
rules, every target up and every metric the rules and the dashboard query returning data."""
from __future__ import annotations

import re
import subprocess
import uuid

import pytest
from support.helpers import event, recommend, wait_for
from support.ops import ALERTS, DEPLOY, referenced_metrics

from shopstream.gateway.v1 import gateway_pb2

from services.contract import topics
from services.stack.embedded import free_port
from services.stack.prometheus import JOBS, LocalPrometheus, find_binary
from services.stack.processes import metrics_text

pytestmark = pytest.mark.e2e

_SUFFIXES = ("_bucket", "_count", "_sum")


def _exported(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            names.add(name)
            names.update(name + s for s in _SUFFIXES)
            if name.endswith("_total"):
                names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, 1)[0])
    return names


def test_alerts_and_dashboard_use_only_exported_metrics(system, producer):
    exported = set()
    for service in ("features", "ranker", "gateway"):
        text = metrics_text(system.stack.ports[f"{service}_metrics"])
        assert text, f"{service} exports no metrics"
        assert f"shopstream_{service}_" in text
        exported |= _exported(text)
    referenced = referenced_metrics()
    assert "shopstream_ranker_rpc_requests_total" in referenced  # the dashboard's shopstream_${service}_* names
    missing = sorted(referenced - exported)
    assert not missing, f"deploy/ references metrics no service exports: {missing}"


def test_scrape_config_targets_every_service():
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    for service in ("features", "ranker", "gateway"):
        assert service in config
    assert "alerts.yml" in config


def test_promtool_accepts_the_rules():
    promtool = find_binary("promtool")
    if promtool is None:
        pytest.skip("promtool not found (on PATH or var/promtool/usr/bin; make check-deploy fetches it)")
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def prometheus(system, tmp_path_factory):
    binary = find_binary("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus not found (on PATH or var/promtool/usr/bin): `make check-deploy` "
                    "unpacks it (apt-get download prometheus)")
    work = tmp_path_factory.mktemp("prometheus")
    targets = {job: f"127.0.0.1:{system.stack.ports[job + '_metrics']}" for job in JOBS}
    with LocalPrometheus(targets, work, free_port(), binary, work / "prometheus.log", scrape_interval_s=1) as prom:
        yield prom


def _traffic(system, producer, catalog_items) -> None:
    """Something for every referenced metric to count: events through the gateway and Kafka, a
    poison record, personalized and trending answers (RankBatch), similar items."""
    user, newcomer = f"ops-{uuid.uuid4().hex[:8]}", f"ops-new-{uuid.uuid4().hex[:8]}"
    items = catalog_items[:3]
    system.gateway.TrackEvents(gateway_pb2.TrackEventsRequest(events=[event(user, i, "VIEW") for i in items]),
                               timeout=5)
    producer.send_raw(topics.EVENTS, user.encode(), b"not an event")  # invalid, dead-lettered
    wait_for(lambda: recommend(system.gateway, user).strategy == gateway_pb2.STRATEGY_PERSONALIZED,
             timeout=20, interval=0.2, what="a personalized answer")
    recommend(system.gateway, newcomer)  # trending fallback
    system.gateway.SimilarItems(gateway_pb2.SimilarItemsRequest(item_id=items[0], k=5), timeout=5)


def test_prometheus_scrapes_the_live_stack_and_every_metric_has_data(system, producer, catalog_items, prometheus):
    _traffic(system, producer, catalog_items)

    def targets_up():
        active = prometheus.api("targets")["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in active}
        return health if health == {job: "up" for job in JOBS} else None

    wait_for(targets_up, timeout=30, interval=0.5, what="every scrape target up")

    rules = [r for group in prometheus.api("rules")["groups"] for r in group["rules"] if r["type"] == "alerting"]
    assert len(rules) >= 10 and all(r["health"] == "ok" for r in rules), rules

    pending = set(referenced_metrics())

    def all_have_data():
        for name in sorted(pending):
            if prometheus.query(name):
                pending.discard(name)
        return not pending

    try:
        wait_for(all_have_data, timeout=30, interval=1.0, what="data for every referenced metric")
    except AssertionError:
        pytest.fail(f"no data in Prometheus for {sorted(pending)}")
    # Healthy stack: once the rules have been evaluated on scraped data (an evaluation before the
    # first scrape finds every target absent: pending, which their `for:` is there to absorb),
    # neither availability alert is pending or firing, and a model is loaded.
    watched = ("ServiceDown", "ServiceAbsent", "RankerNoModel")

    def quiet():
        alerts = prometheus.api("alerts")["alerts"]
        return not [a for a in alerts if a["labels"]["alertname"] in watched] or None

    wait_for(quiet, timeout=20, interval=0.5, what=f"no {'/'.join(watched)} alert on a healthy stack")
