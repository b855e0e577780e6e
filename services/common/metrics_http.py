"""The Prometheus scrape endpoint, one per process."""
from __future__ import annotations

import logging

from prometheus_client import start_http_server

logger = logging.getLogger(__name__)


def serve_metrics(port: int, addr: str = "0.0.0.0") -> int:
    """Starts /metrics on a daemon thread; port 0 picks a free one. Returns the bound port."""
    server, _thread = start_http_server(port, addr=addr)
    bound = server.server_address[1]
    logger.info("metrics on http://%s:%d/metrics", addr, bound)
    return bound
