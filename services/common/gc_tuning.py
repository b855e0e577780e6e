"""Garbage-collector settings for long-running services (called once each has started)."""
from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)


def freeze_startup_heap() -> None:
    """Move every object alive after start-up (modules, protobuf descriptors, gRPC, faust
    and onnxruntime bindings) out of the garbage collector's reach.

    They live as long as the process, yet each full collection walked all of them, and
    those pauses land straight in a server's p99. Generation thresholds stay the
    defaults (raising them made the young collections as slow as the full ones). The
    pauses before and after, measured under bench.serve: docs/performance.md.
    """
    gc.collect()
    gc.freeze()
    logger.debug("froze %d start-up objects", gc.get_freeze_count())
