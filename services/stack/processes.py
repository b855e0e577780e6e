"""Service processes for the local stack and the end-to-end tests.

Each service runs as its own OS process (``python -m services.<name>``), as it
would in a container, and is stopped with SIGTERM so its graceful shutdown runs.
"""
from __future__ import annotations

import logging
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
    """Sum of all samples of one metric (any labels) in Prometheus text format."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


@dataclass
class ServiceProcess:
    name: str  # features | ranker | gateway
    env: dict[str, str]
    log_dir: Path
    proc: subprocess.Popen | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> "ServiceProcess":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
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

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %ss; killing", self.name, timeout)
            self.proc.kill()
            self.proc.wait()
