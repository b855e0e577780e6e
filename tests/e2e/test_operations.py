"""What ops see: every metric the alert rules and the dashboard use is exported by
the running services, and the scrape config targets each service."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from services.stack.processes import metrics_text

pytestmark = pytest.mark.e2e

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_SUFFIXES = ("_bucket", "_count", "_sum")


def _referenced_metrics() -> set[str]:
    names = set()
    for path in [DEPLOY / "prometheus" / "alerts.yml", DEPLOY / "grafana" / "shopstream.json"]:
        names.update(re.findall(r"\bshopstream_[a-z_]+[a-z]\b", path.read_text()))
    return names


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
    missing = sorted(_referenced_metrics() - exported)
    assert not missing, f"deploy/ references metrics no service exports: {missing}"


def test_scrape_config_targets_every_service():
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    for service in ("features", "ranker", "gateway"):
        assert service in config
    assert "alerts.yml" in config


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make check-deploy fetches it)")
def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
