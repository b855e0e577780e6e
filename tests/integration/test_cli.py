"""Every command that README.md and ``shopstream --help`` list, run as a user runs it: the
installed ``shopstream`` script in its own process.

- each command answers ``--help`` (exit 0, a usage text) without starting anything;
- ``shopstream ranker``, ``gateway`` and ``features`` start against the session's real broker
  and Redis (and a published toy model bundle), report healthy the way their probes ask
  (grpc.health.v1 SERVING; the worker's ``GET /healthz/ready``), pass their image's
  HEALTHCHECK command, and exit 0 on SIGTERM.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from dockerfile_parse import DockerfileParser
from support.toy_bundle import publish_toy_bundle

from services.contract.producer import ensure_topics
from services.stack.embedded import free_port
from services.stack.processes import ServiceProcess, grpc_serving, http_ok

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHOPSTREAM = Path(sys.executable).parent / "shopstream"  # the console script pip installed
# Bounds that only a hang reaches; no outcome depends on them.
HELP_TIMEOUT_S = 60
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30

HELP_COMMANDS = [
    ("up",),
    ("ingest",),
    ("ingest", "topics"),
    ("ingest", "publish"),
    ("ingest", "catalog"),
    ("ingest", "replay"),
    ("ingest", "generate"),
    ("ingest", "export"),
    ("train",),
    ("evaluate",),
    ("recommend",),
    ("experiments",),
    ("experiments", "set"),
    ("experiments", "list"),
    ("experiments", "show"),
    ("experiments", "promote"),
    ("experiments", "report"),
    ("simulate",),
    ("retrain",),
    ("loop",),
    ("features",),
    ("ranker",),
    ("gateway",),
]


def _clean_env() -> dict[str, str]:
    """The environment without any service's settings: `--help` must need none."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("SHOPSTREAM_") and k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}


def _run(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([str(SHOPSTREAM), *args], env=_clean_env(), capture_output=True, text=True,
                              timeout=HELP_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:  # run() has killed it
        pytest.fail(f"`shopstream {' '.join(args)}` still running after {HELP_TIMEOUT_S}s: it started something")


def test_shopstream_help_lists_the_commands():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: shopstream COMMAND")


def test_no_or_an_unknown_command_is_a_usage_error():
    for args in ((), ("no-such-command",)):
        result = _run(*args)
        assert result.returncode == 2 and "usage: shopstream COMMAND" in result.stderr


def test_every_documented_command_is_checked():
    """What README's "Command line" section and ``shopstream --help`` list is in HELP_COMMANDS."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    documented: set[tuple[str, ...]] = set()
    for line in section.splitlines():
        if not line.startswith("shopstream "):
            continue
        words = line.split("#", 1)[0].split()[1:]
        if "|" in words:  # "shopstream features | ranker | gateway"
            documented |= {(w,) for w in words if w != "|"}
        else:
            documented.add(tuple(words[:2]) if words[0] == "ingest" else (words[0],))
    listed = _run("--help").stdout.split("commands:", 1)[1]
    documented |= {(line.split()[0],) for line in listed.splitlines() if line.startswith("  ")}
    subcommands = re.search(r"\{([\w,]+)\}", _run("ingest", "--help").stdout).group(1)
    documented |= {("ingest", sub) for sub in subcommands.split(",")}
    assert documented and documented <= set(HELP_COMMANDS), documented - set(HELP_COMMANDS)


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=" ".join)
def test_command_answers_help_without_starting(command):
    result = _run(*command, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    usage = result.stdout.splitlines()[0] if result.stdout else ""
    assert usage.startswith("usage: shopstream ") and command[-1] in usage, result.stdout[:500]


# --- the three services, started by their commands ------------------------------------------


def _image_healthcheck(target: str) -> str:
    """The shell command of the Dockerfile's HEALTHCHECK in stage ``target``."""
    stage = None
    for item in DockerfileParser(path=str(REPO / "Dockerfile")).structure:
        if item["instruction"] == "FROM":
            stage = item["value"].split()[-1]
        elif item["instruction"] == "HEALTHCHECK" and stage == target:
            return item["value"].split(" CMD ", 1)[1]
    raise AssertionError(f"no HEALTHCHECK in the Dockerfile's {target} stage")


def _assert_image_healthcheck_passes(target: str, env: dict[str, str]) -> None:
    path = f"{SHOPSTREAM.parent}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run(["sh", "-c", _image_healthcheck(target)], env={**os.environ, **env, "PATH": path},
                            capture_output=True, text=True, timeout=HELP_TIMEOUT_S)
    assert result.returncode == 0, f"{target} image HEALTHCHECK failed on a healthy service: {result.stderr}"


@pytest.fixture
def models_dir(tmp_path) -> Path:
    items = [f"cli-{n}" for n in range(20)]
    publish_toy_bundle(tmp_path / "models", items, np.random.default_rng(0).normal(size=(len(items), 8)))
    return tmp_path / "models"


@pytest.fixture
def service(tmp_path):
    """Starts ``shopstream NAME`` with an environment; always stopped (SIGKILL at worst) at teardown."""
    started: list[ServiceProcess] = []

    def start(name: str, env: dict[str, str]) -> ServiceProcess:
        proc = ServiceProcess(name, env, tmp_path / "logs", command=[str(SHOPSTREAM), name]).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(timeout=STOP_TIMEOUT_S)


def _stops_cleanly(proc: ServiceProcess) -> None:
    status = proc.stop(timeout=STOP_TIMEOUT_S)
    assert status == 0, f"{proc.name} exited with {status} on SIGTERM (-9: killed after {STOP_TIMEOUT_S}s):\n{proc.tail()}"


def test_shopstream_ranker_serves_then_stops_on_sigterm(service, redis_url, models_dir):
    addr = f"127.0.0.1:{free_port()}"
    proc = service("ranker", {
        "REDIS_URL": redis_url,
        "SHOPSTREAM_RANKER_ADDR": addr,
        "SHOPSTREAM_RANKER_MODELS_DIR": str(models_dir),
        "SHOPSTREAM_RANKER_METRICS_PORT": "0",
        "SHOPSTREAM_RANKER_PREFER_GPU": "false",
        "SHOPSTREAM_RANKER_INTRA_OP_THREADS": "1",
    })
    proc.wait_until(lambda: grpc_serving(addr), START_TIMEOUT_S, "SERVING")
    _assert_image_healthcheck_passes("ranker", {"SHOPSTREAM_RANKER_ADDR": f"0.0.0.0:{addr.rpartition(':')[2]}"})
    _stops_cleanly(proc)


def test_shopstream_gateway_serves_then_stops_on_sigterm(service, redis_url, kafka_bootstrap):
    addr = f"127.0.0.1:{free_port()}"
    proc = service("gateway", {
        "REDIS_URL": redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SHOPSTREAM_GATEWAY_ADDR": addr,
        # No ranker: the gateway is ready without one (it serves trending instead).
        "SHOPSTREAM_GATEWAY_RANKER_ADDR": f"127.0.0.1:{free_port()}",
        "SHOPSTREAM_GATEWAY_METRICS_PORT": "0",
        "SHOPSTREAM_GATEWAY_AUTH": "disabled",  # development: no API tokens (docs/security.md)
    })
    proc.wait_until(lambda: grpc_serving(addr), START_TIMEOUT_S, "SERVING")
    _assert_image_healthcheck_passes("gateway", {"SHOPSTREAM_GATEWAY_ADDR": f"0.0.0.0:{addr.rpartition(':')[2]}"})
    _stops_cleanly(proc)


def test_shopstream_features_gets_ready_then_stops_on_sigterm(service, redis_url, kafka_bootstrap, models_dir,
                                                             tmp_path):
    ensure_topics(kafka_bootstrap, partitions=2)
    port = free_port()
    proc = service("features", {
        "REDIS_URL": redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        # A consumer group of its own, so that it gets partitions whatever else runs.
        "SHOPSTREAM_FEATURES_APP_ID": f"features-cli-{uuid.uuid4().hex[:8]}",
        "SHOPSTREAM_FEATURES_MODELS_DIR": str(models_dir),
        "SHOPSTREAM_FEATURES_DATADIR": str(tmp_path / "faust"),
        "SHOPSTREAM_FEATURES_METRICS_PORT": str(port),
        "SHOPSTREAM_FEATURES_TOPIC_PARTITIONS": "2",
        "SHOPSTREAM_FEATURES_SESSION_TIMEOUT_S": "4",
        "SHOPSTREAM_FEATURES_HEARTBEAT_INTERVAL_S": "1",
        "SHOPSTREAM_FEATURES_REBALANCE_TIMEOUT_S": "4",
    })
    # What the Kubernetes readiness probe asks: partitions assigned and Redis answering.
    proc.wait_until(lambda: http_ok(port, "/healthz/ready"), START_TIMEOUT_S, "ready (GET /healthz/ready)")
    assert http_ok(port, "/healthz/live")
    _assert_image_healthcheck_passes("features", {"SHOPSTREAM_FEATURES_METRICS_PORT": str(port)})
    _stops_cleanly(proc)
