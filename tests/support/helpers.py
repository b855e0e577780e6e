"""Small helpers for the end-to-end tests (clients, event builders, polling)."""
from __future__ import annotations

import subprocess
import time
import uuid

from google.protobuf.timestamp_pb2 import Timestamp

from shopstream.events.v1 import events_pb2
from shopstream.gateway.v1 import gateway_pb2


def event(user: str, item: str, kind: str, event_id: str | None = None) -> events_pb2.Event:
    ts = Timestamp()
    ts.GetCurrentTime()
    return events_pb2.Event(
        event_id=event_id or uuid.uuid4().hex,
        user_id=user,
        item_id=item,
        type=events_pb2.EventType.Value(f"EVENT_TYPE_{kind}"),
        occurred_at=ts,
        session_id=f"s-{user}",
    )


def recommend(stub, user: str, k: int = 10, timeout: float = 2.0, **filters) -> gateway_pb2.RecommendResponse:
    req = gateway_pb2.RecommendRequest(user_id=user, k=k, filters=gateway_pb2.RecommendFilters(**filters))
    return stub.Recommend(req, timeout=timeout)


def wait_for(check, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Polls check() until it returns something truthy; returns it, or fails after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def stop_process(proc, log) -> None:
    """SIGTERM ``proc`` (SIGKILL after 20 s), close its ``log`` (opened w+) and print the log's
    tail when it did not exit by a signal the test sent or cleanly."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.seek(0)
    output = log.read()
    log.close()
    if proc.returncode not in (0, -15, -9):
        print(output[-5000:])
