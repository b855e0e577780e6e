"""What the ops view refers to: every metric name in the alert rules and the Grafana dashboard,
with the dashboard's template variables (``shopstream_$service_...``) expanded over their values."""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "shopstream.json"
PROMETHEUS_TESTS = DEPLOY / "prometheus" / "tests"

_NAME = re.compile(r"\bshopstream_[a-z_]+[a-z]\b")
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def dashboard_variables(dashboard: dict) -> dict[str, list[str]]:
    """Template variable -> the values it takes (custom variables: their options)."""
    out = {}
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "custom":
            values = [o["value"] for o in var.get("options", [])] or var.get("query", "").split(",")
            out[var["name"]] = [v.strip() for v in values if v.strip()]
    return out


def expand(expr: str, variables: dict[str, list[str]]) -> list[str]:
    """``expr`` once per combination of the values of the variables it uses (Grafana's own
    ``$__rate_interval`` and the like are left as they are)."""
    used = [v for v in dict.fromkeys(_VARIABLE.findall(expr)) if v in variables]
    out = []
    for values in itertools.product(*(variables[v] for v in used)):
        text = expr
        for name, value in zip(used, values):
            text = re.sub(r"\$\{" + name + r"\}|\$" + name + r"\b", value, text)
        out.append(text)
    return out


def dashboard_exprs(dashboard: dict | None = None) -> list[str]:
    dashboard = dashboard or json.loads(DASHBOARD.read_text())
    variables = dashboard_variables(dashboard)
    exprs = [t["expr"] for panel in dashboard.get("panels", []) for t in panel.get("targets", []) if "expr" in t]
    return [e for expr in exprs for e in expand(expr, variables)]


def referenced_metrics() -> set[str]:
    """Every ``shopstream_*`` metric (sample) name the alert rules and the dashboard query."""
    names = set(_NAME.findall(ALERTS.read_text()))
    for expr in dashboard_exprs():
        names.update(_NAME.findall(expr))
    return names
