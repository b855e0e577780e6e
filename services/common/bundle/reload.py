"""When a service loads a newly published bundle: one policy for the ranker and the features worker."""
from __future__ import annotations

import time
from collections.abc import Callable


class ReloadPolicy:
    """Which version to load next: ``LATEST`` when it is not the one held, unless that version
    failed to load less than ``failed_retry_s`` ago. A bad bundle is then tried (and counted)
    once per interval rather than once per poll, and a fixed file is picked up without a restart.
    """

    def __init__(self, failed_retry_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._retry_s = failed_retry_s
        self._clock = clock
        self._failed: dict[str, float] = {}  # version -> clock() at its last failure

    def due(self, latest: str | None, held: str | None) -> bool:
        """Whether ``latest`` should be loaded now, while ``held`` is being served."""
        if latest is None or latest == held:
            return False
        failed_at = self._failed.get(latest)
        return failed_at is None or self._clock() - failed_at >= self._retry_s

    def failed(self, version: str) -> None:
        self._failed[version] = self._clock()

    def loaded(self, version: str) -> None:
        self._failed.pop(version, None)
