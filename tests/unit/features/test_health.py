"""WorkerHealth's answers, and the HTTP app that serves them next to the metrics."""
import asyncio
import json
import threading
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from services.features.health import LIVE, READY, WorkerHealth
from services.features.http_endpoint import HttpEndpoint


class Redis:
    def __init__(self, up=True):
        self.up = up

    async def ping(self):
        if not self.up:
            raise ConnectionError("refused")
        return True


async def test_ready_needs_partitions_and_redis():
    redis = Redis()
    health = WorkerHealth(redis)
    health.bind(asyncio.get_running_loop(), lambda: set())
    assert await health.ready() == (False, {"ready": False, "partitions": 0, "reasons": ["no partitions assigned"]})
    health.bind(asyncio.get_running_loop(), lambda: {("events", 0), ("events", 1)})
    assert await health.ready() == (True, {"ready": True, "partitions": 2, "reasons": []})
    redis.up = False
    ok, body = await health.ready()
    assert not ok and body["reasons"] == ["redis: no answer to PING (ConnectionError('refused'))"]


async def test_live_fails_while_an_agent_is_down_until_faust_restarts_it():
    health = WorkerHealth(Redis())
    health.agent_started("process_events")
    health.agent_crashed("process_events", RuntimeError("boom"))
    assert await health.live() == (False, {"live": False,
                                           "reasons": ["agent process_events crashed: RuntimeError('boom')"]})
    health.agent_started("process_events")
    assert (await health.live())[0]


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def test_the_endpoint_serves_probes_and_metrics():
    registry = CollectorRegistry()
    Counter("shopstream_features_probe_test_total", "x", registry=registry).inc()
    health = WorkerHealth(Redis())
    http = HttpEndpoint(0, health, addr="127.0.0.1", registry=registry)
    try:
        # Not bound to a loop yet: starting (live, so that a probe does not restart it; not ready).
        assert await asyncio.to_thread(_get, http.port, "/healthz/live") == (
            200, json.dumps({"live": True, "reasons": [], "state": "starting"}).encode())
        status, body = await asyncio.to_thread(_get, http.port, "/healthz/ready")
        assert status == 503 and json.loads(body)["reasons"] == ["starting"]

        health.bind(asyncio.get_running_loop(), lambda: {("events", 0)})
        status, body = await asyncio.to_thread(_get, http.port, "/healthz/ready")
        assert status == 200 and json.loads(body) == {"ready": True, "partitions": 1, "reasons": []}
        status, body = await asyncio.to_thread(_get, http.port, "/metrics")
        assert status == 200 and b"shopstream_features_probe_test_total 1.0" in body
    finally:
        http.close()


def test_a_loop_that_does_not_run_the_check_is_not_live():
    loop = asyncio.new_event_loop()  # never runs: as a loop blocked by a long call
    try:
        health = WorkerHealth(Redis(), loop_timeout_s=0.05)
        health.bind(loop, lambda: set())
        ok, body = health.check(LIVE)
        assert not ok and body["reasons"][0].startswith("event loop did not run the check")
        loop.run_until_complete(asyncio.sleep(0))  # the loop comes back: the abandoned check is dropped
    finally:
        loop.close()
    ok, body = health.check(READY)  # the worker has stopped
    assert not ok and body["reasons"][0].startswith("event loop closed")


def test_check_from_the_http_thread_runs_on_the_loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        health = WorkerHealth(Redis())
        health.bind(loop, lambda: {("events", 0)})
        assert health.check(LIVE) == (True, {"live": True, "reasons": []})
        assert health.check(READY)[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def test_a_writer_that_died_holding_events_keeps_the_worker_not_live():
    health = WorkerHealth(Redis())
    health.writer_stopped("process_events", RuntimeError("ack failed"))
    health.agent_started("process_events")  # faust restarted the agent: the held events stay unacked
    ok, body = await health.live()
    assert not ok and body["reasons"] == [
        "agent process_events: writer stopped with events unacked, restart to redeliver: RuntimeError('ack failed')"]
