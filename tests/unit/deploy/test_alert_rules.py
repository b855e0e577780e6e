"""The alert rules and the dashboard as data: every alert has a `promtool test rules` case in
which it fires (deploy/prometheus/tests/), the tests pass, and every metric the rules and the
dashboard query is one a service defines (``shopstream_${service}_*`` names included)."""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from support.ops import ALERTS, PROMETHEUS_TESTS, dashboard_exprs, referenced_metrics

from services.stack.prometheus import find_binary

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}


def _alert_names() -> set[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return {rule["alert"] for group in doc["groups"] for rule in group["rules"] if "alert" in rule}


def _firing_cases() -> dict[str, int]:
    """Alert -> how many test cases expect it to fire."""
    out: dict[str, int] = {}
    for path in sorted(PROMETHEUS_TESTS.glob("*.yml")):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    out[case["alertname"]] = out.get(case["alertname"], 0) + 1
    return out


def test_every_alert_has_a_test_where_it_fires():
    names = _alert_names()
    assert len(names) >= 10
    firing = _firing_cases()
    assert not names - set(firing), f"alerts no promtool test makes fire: {sorted(names - set(firing))}"
    assert not set(firing) - names, f"tests of alerts that do not exist: {sorted(set(firing) - names)}"


def test_promtool_rule_tests_pass():
    promtool = find_binary("promtool")
    if promtool is None:
        pytest.skip("promtool not found (on PATH or var/promtool/usr/bin): `make check-deploy` fetches "
                    "Debian's prometheus package, which has it")
    files = sorted(str(p) for p in PROMETHEUS_TESTS.glob("*.yml"))
    result = subprocess.run([promtool, "test", "rules", *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


def test_dashboard_uses_only_defined_variables():
    """Grafana reads ``$service_rpc`` as a variable named ``service_rpc``: a name followed by
    word characters must be written ``${service}``."""
    import json

    from support.ops import DASHBOARD, dashboard_variables

    dashboard = json.loads(DASHBOARD.read_text())
    defined = set(dashboard_variables(dashboard)) | {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used = set(re.findall(r"\$\{(\w+)\}|\$(\w+)", target["expr"]))
            names = {a or b for a, b in used if not (a or b).startswith("__")}
            assert names <= defined, f"panel {panel['title']!r} uses undefined variables {names - defined}"
    assert not any("$" in expr.replace("$__", "") for expr in dashboard_exprs()), "a variable left unexpanded"


def _defined_metrics() -> set[str]:
    """Sample names every service's metrics module defines (the families' names and suffixes)."""
    from services.features.metrics import FeaturesMetrics
    from services.gateway.metrics import gateway_metrics
    from services.ranker.metrics import ranker_metrics

    ranker_metrics(), gateway_metrics()
    features = CollectorRegistry()
    FeaturesMetrics(features)
    names = set()
    for registry in (REGISTRY, features):
        for family in registry.collect():
            names.add(family.name)
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
    return names


def test_rules_and_dashboard_query_metrics_the_services_define():
    referenced = referenced_metrics()
    assert {"shopstream_ranker_rpc_requests_total", "shopstream_gateway_rpc_requests_total"} <= referenced
    missing = sorted(referenced - _defined_metrics())
    assert not missing, f"deploy/ queries metrics no service defines: {missing}"
