"""Service processes for the local stack and the end-to-end tests.

Each service runs as its own OS process (``python -m services.<name>``), as it
would in a container, and is stopped with SIGTERM so its graceful shutdown runs.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from services.stack.embedded import die_with_parent

logger = logging.getLogger(__name__)


def grpc_serving(addr: str, timeout: float = 0.5) -> bool:
    """True when the server at addr answers grpc.health.v1 Check with SERVING."""
    try:
        with grpc.insecure_channel(addr) as channel:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            return resp.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def metrics_text(port: int, timeout: float = 0.5, names: Sequence[str] = ()) -> str | None:
    """The service's Prometheus exposition, or None when it does not answer. With ``names``
    only those metrics (prometheus_client's ``name[]`` filter): the service then collects
    just their collectors, so a tight polling loop costs it far less of its CPU."""
    query = ("?" + urllib.parse.urlencode([("name[]", n) for n in names])) if names else ""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics{query}", timeout=timeout) as resp:
            return resp.read().decode()
    except OSError:
        return None


def metric_value(text: str, name: str) -> float | None:
    """Sum of every sample named ``name`` (any labels) in Prometheus text format, or None when
    there is none. ``name`` is a sample name: a counter's is ``..._total``, a histogram's
    ``..._count`` / ``..._sum`` / ``..._bucket``."""
    values = [sample.value
              for family in text_string_to_metric_families(text)
              for sample in family.samples if sample.name == name]
    return math.fsum(values) if values else None


def http_ok(port: int, path: str, timeout: float = 0.5) -> bool:
    """True when ``GET http://127.0.0.1:{port}{path}`` answers 2xx (a readiness endpoint)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except OSError:  # refused, timed out, or an HTTP error status (HTTPError is an OSError)
        return False


@dataclass
class ServiceProcess:
    name: str  # features | ranker | gateway
    env: dict[str, str]
    log_dir: Path
    # Default ``python -m services.<name>``; e.g. ``["shopstream", name]`` to run it through the CLI.
    command: Sequence[str] | None = None
    proc: subprocess.Popen | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> "ServiceProcess":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                list(self.command or [sys.executable, "-m", f"services.{self.name}"]),
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
            )
        logger.info("started %s (pid %d), log %s", self.name, self.proc.pid, self.log_path)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_until(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log_path}:\n{self.tail()}")
            if check():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not {what} after {timeout}s; see {self.log_path}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status (None if never started,
        negative for the signal that ended it, so -9 when it had to be killed)."""
        if not self.alive():
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %ss; killing", self.name, timeout)
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode
