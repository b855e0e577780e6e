"""The worker's HTTP port (``SHOPSTREAM_FEATURES_METRICS_PORT``): Prometheus and the probes.

- ``GET /healthz/live``: 200 while the worker is live, else 503 (see ``health``);
- ``GET /healthz/ready``: 200 once partitions are assigned and Redis answers, else 503;
  both with a JSON body (``reasons`` says why not);
- any other path: the Prometheus exposition (prometheus_client's WSGI app, so the
  ``name[]`` filter works as on the other services).

A WSGI server on daemon threads, as prometheus_client's own ``start_http_server``,
so scraping never runs on the worker's event loop; the probes hand their check to
the loop (see ``WorkerHealth.check``). faust's web server stays off: it would run
on the worker's loop and add a second port.
"""
from __future__ import annotations

import json
import logging
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from services.features.health import LIVE, READY, WorkerHealth

logger = logging.getLogger(__name__)

PROBES = {"/healthz/live": LIVE, "/healthz/ready": READY}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 -- a probe every few seconds is not worth a log line
        pass


def make_app(health: WorkerHealth, registry: CollectorRegistry = REGISTRY):
    """The WSGI app: the probes, and the metrics on every other path."""
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        which = PROBES.get(environ.get("PATH_INFO", ""))
        if which is None:
            return metrics(environ, start_response)
        ok, body = health.check(which)
        raw = json.dumps(body).encode()
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(raw))),
                        ("Cache-Control", "no-store")])
        return [raw]

    return app


class HttpEndpoint:
    """The server on its thread; ``port`` is the one bound (0 in settings picks a free one)."""

    def __init__(self, port: int, health: WorkerHealth, addr: str = "0.0.0.0",
                 registry: CollectorRegistry = REGISTRY) -> None:
        self._server = make_server(addr, port, make_app(health, registry), _Server, handler_class=_QuietHandler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="features-http", daemon=True)
        self._thread.start()
        logger.info("metrics and probes on http://%s:%d (/metrics, /healthz/live, /healthz/ready)", addr, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
