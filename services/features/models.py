"""The model currently used to encode users, hot-reloaded when ``LATEST`` changes."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from pathlib import Path

from services.common.bundle.files import latest_version
from services.common.bundle.model import load_bundle
from services.common.bundle.reload import ReloadPolicy
from services.features.metrics import FeaturesMetrics

logger = logging.getLogger(__name__)


class EncoderHolder:
    """The bundle whose encoder computes user embeddings (or None); ``reload_if_changed``
    swaps in a new version under the ranker's ``ReloadPolicy``."""

    def __init__(self, models_dir: Path, executor: Executor, metrics: FeaturesMetrics,
                 prefer_gpu: bool = False, intra_op_threads: int = 1, failed_retry_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.models_dir = Path(models_dir)
        self.bundle = None
        self._executor = executor
        self._metrics = metrics
        self._prefer_gpu = prefer_gpu
        self._threads = intra_op_threads
        self._policy = ReloadPolicy(failed_retry_s, clock)
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
        (or LATEST moves on), then tried again (``ReloadPolicy``, as in the ranker).
        """
        try:
            return await self._reload_if_changed()
        finally:
            self.first_attempt.set()

    async def _reload_if_changed(self) -> bool:
        loop = asyncio.get_running_loop()
        latest = await loop.run_in_executor(self._executor, latest_version, self.models_dir)
        if not self._policy.due(latest, self.version):
            return False
        try:
            bundle = await loop.run_in_executor(
                self._executor,
                partial(load_bundle, self.models_dir, latest, prefer_gpu=self._prefer_gpu,
                        intra_op_threads=self._threads),
            )
        except Exception:
            self._policy.failed(latest)
            self._metrics.model_reload_failures.inc()
            logger.exception("failed to load model %s; keeping %s", latest, self.version)
            return False
        self._policy.loaded(latest)
        previous, self.bundle = self.version, bundle
        self._metrics.set_model(bundle.version)
        logger.info("model swapped", extra={"model_version": bundle.version, "previous": previous})
        return True
