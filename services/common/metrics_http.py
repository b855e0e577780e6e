"""The Prometheus scrape endpoint, one per process."""
from __future__ import annotations

import logging

from prometheus_client import start_http_server

logger = logging.getLogger(__name__)

# Loopback unless a deployment says otherwise (the k8s manifests set 0.0.0.0 for Prometheus):
# metrics name models, queues and error rates that the public network has no business reading.
DEFAULT_METRICS_HOST = "127.0.0.1"


def serve_metrics(port: int, addr: str = DEFAULT_METRICS_HOST) -> int:
    """Starts /metrics on a daemon thread; port 0 picks a free one. Returns the bound port."""
    server, _thread = start_http_server(port, addr=addr)
    bound = server.server_address[1]
    logger.info("metrics on http://%s:%d/metrics", addr, bound)
    return bound
