"""LazyProducer: connects on first send, retries after a failure, one attempt at a time."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.gateway import publisher
from services.gateway.publisher import LazyProducer


class FakeProducer:
    """Stands in for the contract's EventProducer; ``outcomes`` decide each connection attempt."""

    attempts: list[str] = []
    instances: list["FakeProducer"] = []
    outcomes: list = []
    connecting = threading.Event()
    proceed = threading.Event()

    def __init__(self, bootstrap_servers, **overrides) -> None:
        FakeProducer.attempts.append(bootstrap_servers)
        FakeProducer.connecting.set()
        assert FakeProducer.proceed.wait(30), "the test never let the connection attempt finish"
        outcome = FakeProducer.outcomes.pop(0) if FakeProducer.outcomes else None
        if outcome is not None:
            raise outcome
        self.closed = False
        FakeProducer.instances.append(self)

    def send_events(self, events, wait=True):
        return len(events)

    def close(self):
        self.closed = True


@pytest.fixture(autouse=True)
def fake(monkeypatch):
    FakeProducer.attempts, FakeProducer.instances, FakeProducer.outcomes = [], [], []
    FakeProducer.connecting, FakeProducer.proceed = threading.Event(), threading.Event()
    FakeProducer.proceed.set()
    monkeypatch.setattr(publisher, "EventProducer", FakeProducer)


def test_connects_on_first_send_only_and_retries_after_a_failure():
    lazy = LazyProducer("kafka:9092")
    assert FakeProducer.attempts == []
    FakeProducer.outcomes = [ConnectionError("no brokers")]
    with pytest.raises(ConnectionError):
        lazy.send_events(["e"])
    assert lazy.send_events(["e", "f"]) == 2  # the next call connects again
    assert lazy.send_events(["g"]) == 1
    assert FakeProducer.attempts == ["kafka:9092", "kafka:9092"]


class WatchedLock:
    """A lock that says when a second thread is waiting for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.contended = threading.Event()

    def __enter__(self):
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()


def test_callers_behind_a_failed_attempt_fail_at_once():
    lazy = LazyProducer("kafka:9092")
    lazy._lock = lock = WatchedLock()
    FakeProducer.outcomes = [ConnectionError("no brokers")]
    FakeProducer.proceed.clear()  # the first attempt hangs until released
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(lazy.send_events, ["e"])
        assert FakeProducer.connecting.wait(30)
        second = pool.submit(lazy.send_events, ["f"])
        assert lock.contended.wait(30)  # the second waits for the lock behind the first attempt
        FakeProducer.proceed.set()
        for call in (first, second):
            with pytest.raises(ConnectionError):
                call.result(timeout=30)
    assert len(FakeProducer.attempts) == 1  # the second did not wait out a timeout of its own


def test_close_closes_the_connection_and_refuses_later_sends():
    lazy = LazyProducer("kafka:9092")
    lazy.close()  # never connected: nothing to close
    lazy = LazyProducer("kafka:9092")
    lazy.send_events(["e"])
    lazy.close()
    assert [p.closed for p in FakeProducer.instances] == [True]
    with pytest.raises(ConnectionError):
        lazy.send_events(["e"])
    assert len(FakeProducer.attempts) == 1
