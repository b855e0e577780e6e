"""Prometheus for the local stack: Debian's ``prometheus`` package, unpacked under ``var/``
(never installed), scraping the running services with the project's alert rules.

Optional everywhere: ``shopstream up`` starts it when the binary is there (or fetches it with
``--prometheus``), and the tests that need it skip without it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services.stack.embedded import die_with_parent

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
# Where `make check-deploy` and `fetch_prometheus` unpack Debian's package (both binaries).
UNPACKED = Path("var") / "promtool"
JOBS = ("features", "ranker", "gateway")  # the job names the alert rules select on


def find_binary(name: str = "prometheus", workdir: Path | None = None) -> str | None:
    """``prometheus`` or ``promtool``: on PATH, else unpacked under ``var/promtool`` (of the
    workdir, the current directory or the repository)."""
    found = shutil.which(name)
    if found:
        return found
    roots = [workdir.parent if workdir is not None else None, Path.cwd(), REPO]
    for root in filter(None, roots):
        candidate = root / UNPACKED / "usr" / "bin" / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def fetch_prometheus(dest: Path = UNPACKED) -> str:
    """``apt-get download prometheus`` and ``dpkg -x`` into ``dest`` (as ``make check-deploy``
    does); returns the prometheus binary. Raises RuntimeError saying what failed."""
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise RuntimeError("no apt-get/dpkg here to fetch Debian's prometheus package; install Prometheus "
                           "and put it on PATH, or run without --prometheus")
    dest.mkdir(parents=True, exist_ok=True)
    for deb in dest.glob("prometheus_*.deb"):
        deb.unlink()
    download = subprocess.run(["apt-get", "download", "prometheus"], cwd=dest, capture_output=True, text=True)
    debs = list(dest.glob("prometheus_*.deb"))
    if download.returncode != 0 or not debs:
        raise RuntimeError(f"apt-get download prometheus failed: {(download.stderr or download.stdout).strip()}")
    subprocess.run(["dpkg", "-x", str(debs[0]), "."], cwd=dest, check=True, capture_output=True)
    return str((dest / "usr" / "bin" / "prometheus").resolve())


def scrape_config(targets: dict[str, str], scrape_interval_s: float = 5.0, rules: Path | None = RULES) -> dict:
    """The configuration: ``targets`` is job -> host:port of its /metrics."""
    interval = f"{scrape_interval_s:g}s"
    config: dict = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [addr]}]}
                           for job, addr in targets.items()],
    }
    if rules is not None:
        config["rule_files"] = [str(rules.resolve())]
    return config


@dataclass
class LocalPrometheus:
    """A Prometheus process scraping ``targets`` (job -> host:port), its files in ``workdir``."""

    targets: dict[str, str]
    workdir: Path
    port: int
    binary: str
    log_path: Path
    scrape_interval_s: float = 5.0
    rules: Path | None = RULES
    _proc: subprocess.Popen | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "LocalPrometheus":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        rules = self.rules if self.rules is not None and self.rules.is_file() else None
        # JSON is YAML: no YAML library needed in the serving install.
        config.write_text(json.dumps(scrape_config(self.targets, self.scrape_interval_s, rules), indent=2))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
               f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d"]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Prometheus did not start; see {self.log_path}")
            time.sleep(0.1)
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=0.5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> dict:
        """GET ``/api/v1/<path>`` and return its ``data``."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as resp:
            doc = json.load(resp)
        if doc.get("status") != "success":
            raise RuntimeError(f"Prometheus {path}: {doc}")
        return doc["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> "LocalPrometheus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
