"""The consumer's fetch wait: faust hard-codes 1500 ms, the worker's transport sets its own.

These build the aiokafka client the consumer thread would start (no broker needed)
and read back the one value the transport changes.
"""
import asyncio

import faust
from prometheus_client import CollectorRegistry

from services.features.app import create_app
from services.features.main import build
from services.features.settings import FeaturesSettings
from services.features.transport import FetchWaitTransport


async def _worker_client_fetch_wait(app: faust.App) -> int:
    client = app.consumer._thread._create_consumer(loop=asyncio.get_running_loop())
    try:
        return client._fetch_max_wait_ms
    finally:
        await client.stop()


def _app() -> faust.App:
    return faust.App("fetch-wait-test", broker="kafka://127.0.0.1:1", autodiscover=False, web_enabled=False)


async def test_faust_still_hard_codes_the_fetch_wait():
    # When this fails, faust has changed how it builds the consumer: transport.py may be unnecessary.
    assert await _worker_client_fetch_wait(_app()) == 1500


async def test_the_transport_sets_the_fetch_wait_and_nothing_else():
    plain, ours = _app(), _app()
    ours.transport = FetchWaitTransport(ours.conf.broker_consumer, ours, fetch_max_wait_ms=7)
    assert await _worker_client_fetch_wait(ours) == 7
    plain_client = plain.consumer._thread._create_consumer(loop=asyncio.get_running_loop())
    our_client = ours.consumer._thread._create_consumer(loop=asyncio.get_running_loop())
    try:
        differ = {k for k, v in vars(our_client).items()
                  if k in vars(plain_client) and isinstance(v, (int, float, str, bool)) and vars(plain_client)[k] != v}
        assert differ == {"_fetch_max_wait_ms"}
    finally:
        await plain_client.stop()
        await our_client.stop()


async def test_the_worker_app_consumes_through_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_FEATURES_FETCH_MAX_WAIT_MS", "12")
    settings = FeaturesSettings(datadir=tmp_path / "faust", models_dir=tmp_path / "models")
    deps = build(settings, registry=CollectorRegistry())  # as main wires it; nothing connects yet
    try:
        app = create_app(settings, deps)
        assert isinstance(app.transport, FetchWaitTransport)
        assert await _worker_client_fetch_wait(app) == 12
    finally:
        deps.executor.shutdown()
        await deps.redis.aclose()
