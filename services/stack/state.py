"""Where a running ``shopstream up`` is: its state file, and the fixed default ports.

``shopstream up`` writes ``<workdir>/stack.json`` (addresses, metrics ports, log paths, its
pid) once everything is up and removes it on exit; client commands (``shopstream recommend``,
``shopstream ingest ...``) read it when no flag or environment variable names an address.
A file whose pid is gone (a stack killed with SIGKILL) counts as no stack.
"""
from __future__ import annotations

import errno
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE_VAR = "SHOPSTREAM_STACK_FILE"
STATE_FILE_NAME = "stack.json"
# The embedded Redis's URL with its password, beside the state file and readable by its owner
# only (as ~/.pgpass): stack.json is written without the password.
REDIS_URL_FILE_NAME = "redis.url"
DEFAULT_WORKDIR = Path("var")

# The local stack's ports: the services' own settings defaults (and deploy/prometheus's
# targets), so an address in the README is the address `shopstream up` serves on.
# name -> (default port, the `shopstream up` flag that overrides it)
PORTS: dict[str, tuple[int, str]] = {
    "gateway": (50052, "--gateway-port"),
    "gateway_http": (8080, "--http-port"),
    "ranker": (50051, "--ranker-port"),
    "features_metrics": (9102, "--features-metrics-port"),
    "ranker_metrics": (9103, "--ranker-metrics-port"),
    "gateway_metrics": (9104, "--gateway-metrics-port"),
    "prometheus": (9090, "--prometheus-port"),
}
# The embedded broker and Redis take these when free, else any free port (printed, and in the
# state file): clients find them there, and a real Kafka or Redis on the machine is no conflict.
KAFKA_PORT, REDIS_PORT = 9092, 6379


class PortInUse(RuntimeError):
    pass


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now. SO_REUSEADDR as servers set it (a
    socket in TIME_WAIT is no conflict); no SO_REUSEPORT, which gRPC servers set and which would
    let two of them share a port without an error."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def check_ports(ports: dict[str, int]) -> None:
    """Raises PortInUse naming every taken port and the flag that moves it."""
    taken = [name for name, port in ports.items() if port and not port_free(port)]
    if taken:
        lines = [f"  port {ports[name]} ({name.replace('_', ' ')}) is in use: pass {PORTS[name][1]} PORT"
                 for name in taken]
        raise PortInUse("\n".join(["ports in use (another `shopstream up`? stop it first):", *lines,
                                    "  or --free-ports to let the OS pick every port"]))


@dataclass
class StackState:
    """What a client needs to reach the running stack. Redis is written without its password."""

    pid: int
    workdir: str
    kafka: str
    redis: str
    gateway: str
    ranker: str
    metrics: dict[str, str] = field(default_factory=dict)  # service -> its /metrics URL
    logs: dict[str, str] = field(default_factory=dict)  # what -> log file
    gateway_http: str = ""  # base URL of the HTTP/JSON API and demo page, "" when not served
    demo: str = ""
    prometheus: str = ""
    redis_url_file: str = ""  # the owner-only file holding Redis's URL with its password, "" when none
    models_dir: str = ""  # the ranker's models directory (``experiments promote`` sets LATEST there)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)  # readers never see half a file

    @classmethod
    def read(cls, path: Path) -> "StackState":
        doc = json.loads(path.read_text(encoding="utf-8"))
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})


def state_path(workdir: Path) -> Path:
    return workdir / STATE_FILE_NAME


def write_private(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` readable and writable by its owner only (0600 from creation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file left by an earlier run keeps its mode through O_CREAT
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text + "\n")


def stack_redis_url(state: "StackState | None" = None) -> str | None:
    """The running stack's Redis URL, password included (``redis_url_file``); None without one."""
    state = state if state is not None else find_state()
    if state is None or not state.redis_url_file:
        return None
    try:
        return Path(state.redis_url_file).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def remove_state(path: Path, pid: int) -> None:
    """Removes the state file if it is still this process's."""
    try:
        if StackState.read(path).pid == pid:
            path.unlink()
    except (OSError, ValueError, TypeError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_state(cwd: Path | None = None) -> StackState | None:
    """The running stack: ``$SHOPSTREAM_STACK_FILE``, else ``var/stack.json`` in the current
    directory or the nearest parent that has one. None when there is none or it is stale."""
    explicit = os.environ.get(STATE_FILE_VAR)
    if explicit:
        candidates = [Path(explicit)]
    else:
        here = (cwd or Path.cwd()).resolve()
        candidates = [d / DEFAULT_WORKDIR / STATE_FILE_NAME for d in (here, *here.parents)]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            state = StackState.read(path)
        except (OSError, ValueError, TypeError):
            return None
        return state if _alive(state.pid) else None
    return None


NO_STACK = ("no running stack found (var/stack.json, written by `shopstream up`): start one with "
            "`shopstream up` (or `make run`) in this directory, or pass {flag}")
