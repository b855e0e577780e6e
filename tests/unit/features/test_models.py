"""The features worker's model holder retries a version that failed to load, after failed_retry_s."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry

from services.features import models
from services.features.metrics import FeaturesMetrics


class _Bundles:
    """Stand-ins for latest_version and load_bundle: LATEST is "v1", loading fails ``fail`` times."""

    def __init__(self, fail: int) -> None:
        self.fail, self.loads = fail, 0

    def latest_version(self, _dir):
        return "v1"

    def load_bundle(self, _dir, version, **_):
        self.loads += 1
        if self.loads <= self.fail:
            raise ValueError("corrupt")
        return type("Bundle", (), {"version": version, "max_len": 4})()


async def test_failed_version_is_retried_after_failed_retry_s(monkeypatch, tmp_path):
    bundles, now = _Bundles(fail=1), [0.0]
    monkeypatch.setattr(models, "latest_version", bundles.latest_version)
    monkeypatch.setattr(models, "load_bundle", bundles.load_bundle)
    with ThreadPoolExecutor(1) as pool:
        holder = models.EncoderHolder(tmp_path, pool, FeaturesMetrics(CollectorRegistry()),
                                      failed_retry_s=30.0, clock=lambda: now[0])
        assert not await holder.reload_if_changed() and bundles.loads == 1
        now[0] = 29.0
        assert not await holder.reload_if_changed() and bundles.loads == 1  # not yet
        now[0] = 30.0
        assert await holder.reload_if_changed() and holder.version == "v1" and bundles.loads == 2
