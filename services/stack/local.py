"""The local stack: infrastructure (given or embedded) and the three service processes.

Shared by ``shopstream up`` and the end-to-end tests so both run the system the
same way: real broker, real Redis, each service in its own process.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from services.common.infra import redacted
from services.stack.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from services.stack.processes import ServiceProcess, grpc_serving, http_ok

logger = logging.getLogger(__name__)

# The local stack is a development system: its gateway takes calls without API tokens.
# ``shopstream up`` says so in its output; ``extra_env`` can set tokens and "required" instead.
DEV_GATEWAY_ENV = {"SHOPSTREAM_GATEWAY_AUTH": "disabled"}


@contextlib.contextmanager
def infrastructure(kafka: str | None = None, redis: str | None = None, redis_dir: Path | None = None,
                   kafka_port: int | None = None, redis_port: int | None = None):
    """Yields (bootstrap_servers, redis_url): the given ones (or KAFKA_BOOTSTRAP_SERVERS,
    REDIS_URL), else embedded servers (on ``kafka_port`` / ``redis_port``, default any free
    port). The embedded Redis keeps its data (AOF) in ``redis_dir``; without one, in a
    temporary directory removed afterwards (benchmarks)."""
    with contextlib.ExitStack() as stack:
        kafka = kafka or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        redis = redis or os.environ.get("REDIS_URL")
        if not kafka:
            kafka = stack.enter_context(EmbeddedKafka(port=kafka_port)).bootstrap_servers
            logger.info("embedded Kafka-compatible broker (tansu, memory storage) at %s", kafka)
        if not redis:
            data_dir = redis_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shopstream-redis-")))
            redis = stack.enter_context(EmbeddedRedis(data_dir=data_dir, port=redis_port)).url
            logger.info("embedded Redis-compatible server (valkey, AOF in %s) at %s", data_dir, redacted(redis))
        yield kafka, redis


@dataclass
class ServiceStack:
    """features, ranker and gateway as processes, wired to one broker, Redis and models dir."""

    kafka: str
    redis: str
    models_dir: Path
    log_dir: Path
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("ranker", "gateway", "gateway_http", "features_metrics", "ranker_metrics", "gateway_metrics"):
            if not self.ports.get(key):  # missing or 0: any free port
                self.ports[key] = free_port()

    @property
    def gateway_addr(self) -> str:
        return f"127.0.0.1:{self.ports['gateway']}"

    @property
    def ranker_addr(self) -> str:
        return f"127.0.0.1:{self.ports['ranker']}"

    @property
    def gateway_http_url(self) -> str | None:
        """Base URL of the gateway's HTTP/JSON API and demo page; None for a gateway without one."""
        return f"http://127.0.0.1:{self.ports['gateway_http']}" if gateway_has_http() else None

    def log_paths(self) -> dict[str, Path]:
        return {name: self.log_dir / f"{name}.log" for name in ("features", "ranker", "gateway")}

    def _env(self, name: str) -> dict[str, str]:
        common = {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka,
            "REDIS_URL": self.redis,
        }
        per_service = {
            "features": {
                "SHOPSTREAM_FEATURES_MODELS_DIR": str(self.models_dir),
                "SHOPSTREAM_FEATURES_METRICS_PORT": str(self.ports["features_metrics"]),
                "SHOPSTREAM_FEATURES_TOPIC_PARTITIONS": str(self.partitions),
                "SHOPSTREAM_FEATURES_DATADIR": str(self.log_dir / "faust"),
            },
            "ranker": {
                "SHOPSTREAM_RANKER_ADDR": self.ranker_addr,
                "SHOPSTREAM_RANKER_MODELS_DIR": str(self.models_dir),
                "SHOPSTREAM_RANKER_METRICS_PORT": str(self.ports["ranker_metrics"]),
            },
            "gateway": {
                "SHOPSTREAM_GATEWAY_ADDR": self.gateway_addr,
                "SHOPSTREAM_GATEWAY_RANKER_ADDR": self.ranker_addr,
                "SHOPSTREAM_GATEWAY_METRICS_PORT": str(self.ports["gateway_metrics"]),
                **({HTTP_ADDR_VAR: f"127.0.0.1:{self.ports['gateway_http']}"} if gateway_has_http() else {}),
                **DEV_GATEWAY_ENV,
            },
        }[name]
        return {**common, **per_service, **self.extra_env}

    def start_service(self, name: str, timeout: float = 60.0) -> ServiceProcess:
        self.launch(name)
        return self.wait_ready(name, timeout)

    def launch(self, name: str) -> ServiceProcess:
        """Starts the service's process without waiting for it to be ready."""
        proc = ServiceProcess(name, self._env(name), self.log_dir).start()
        self.processes[name] = proc
        return proc

    def wait_ready(self, name: str, timeout: float = 60.0) -> ServiceProcess:
        proc = self.processes[name]
        if name == "features":
            port = self.ports["features_metrics"]
            proc.wait_until(lambda: _features_ready(port), timeout, "consuming")
        else:
            addr = self.ranker_addr if name == "ranker" else self.gateway_addr
            proc.wait_until(lambda: grpc_serving(addr), timeout, "SERVING")
        logger.info("%s ready", name)
        return proc

    def start(self) -> "ServiceStack":
        """All three at once (their start-up is mostly imports and model loading, which overlap),
        then each waited for; a failure stops the ones already started."""
        try:
            for name in ("features", "ranker", "gateway"):
                self.launch(name)
            for name in ("features", "ranker", "gateway"):
                self.wait_ready(name, timeout=120.0)
        except BaseException:
            self.stop()
            raise
        return self

    def stop_service(self, name: str) -> None:
        proc = self.processes.pop(name, None)
        if proc is not None:
            proc.stop()

    def stop(self) -> None:
        for name in ("gateway", "ranker", "features"):  # reverse order of start
            self.stop_service(name)

    def __enter__(self) -> "ServiceStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


HTTP_ADDR_VAR = "SHOPSTREAM_GATEWAY_HTTP_ADDR"


def gateway_has_http() -> bool:
    """Whether this gateway serves HTTP (its settings have ``http_addr``): the stack sets the
    address only then, since the gateway refuses variables that name no setting."""
    from services.gateway.settings import GatewaySettings

    return "http_addr" in GatewaySettings.model_fields


def _features_ready(metrics_port: int) -> bool:
    """The worker's readiness endpoint: partitions assigned and Redis answering."""
    return http_ok(metrics_port, "/healthz/ready")
