"""The model currently used to encode users, hot-reloaded when ``LATEST`` changes.

``services.common.bundle`` is imported lazily so the worker still runs
(applying state, skipping embeddings) in an image without the model runtime.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from pathlib import Path

from services.features.metrics import FeaturesMetrics

logger = logging.getLogger(__name__)


def _bundle_module():
    try:
        from services.common import bundle
    except ImportError:
        return None
    return bundle


class ModelHolder:
    """Holds the loaded bundle (or None); ``reload_if_changed`` swaps in a new version."""

    def __init__(self, models_dir: Path, executor: Executor, metrics: FeaturesMetrics,
                 prefer_gpu: bool = False, intra_op_threads: int = 1, failed_retry_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.models_dir = Path(models_dir)
        self.bundle = None
        self._executor = executor
        self._metrics = metrics
        self._prefer_gpu = prefer_gpu
        self._threads = intra_op_threads
        self._failed_version: str | None = None
        self._failed_at = 0.0
        self._failed_retry_s = failed_retry_s
        self._clock = clock
        # Set once the first load attempt finished (loaded, failed or no bundle):
        # the worker waits for it so events at start-up get embeddings too.
        self.first_attempt = asyncio.Event()

    @property
    def version(self) -> str | None:
        return self.bundle.version if self.bundle is not None else None

    async def reload_if_changed(self) -> bool:
        """Load the LATEST bundle when it differs from the one held; True if swapped.

        Loading (file reads, checksums, onnxruntime session) runs in the executor.
        A version that failed to load is skipped until ``failed_retry_s`` has passed
        (or LATEST moves on), then tried again: the ranker's policy.
        """
        try:
            return await self._reload_if_changed()
        finally:
            self.first_attempt.set()

    async def _reload_if_changed(self) -> bool:
        mb = _bundle_module()
        if mb is None:
            return False
        loop = asyncio.get_running_loop()
        latest = await loop.run_in_executor(self._executor, mb.latest_version, self.models_dir)
        if latest is None or latest == self.version:
            return False
        if latest == self._failed_version and self._clock() - self._failed_at < self._failed_retry_s:
            return False
        try:
            bundle = await loop.run_in_executor(
                self._executor,
                partial(mb.load_bundle, self.models_dir, latest, prefer_gpu=self._prefer_gpu,
                        intra_op_threads=self._threads),
            )
        except Exception:
            self._failed_version, self._failed_at = latest, self._clock()
            self._metrics.model_reload_failures.inc()
            logger.exception("failed to load model %s; keeping %s", latest, self.version)
            return False
        previous, self.bundle = self.version, bundle
        self._metrics.set_model(bundle.version)
        logger.info("model swapped", extra={"model_version": bundle.version, "previous": previous})
        return True
