"""LazyProducer: connects on first send, retries after a failure, one attempt at a time.

Recovery after a broker restart runs on a real broker: tests/integration/test_producer_recovery.py.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from shopstream.events.v1 import events_pb2

from services.gateway.publisher import LazyProducer


def events(n: int) -> list[events_pb2.Event]:
    return [events_pb2.Event(event_id=f"e{i}", user_id="u", item_id="i", type=events_pb2.EVENT_TYPE_VIEW,
                             occurred_at=Timestamp(seconds=1_700_000_000)) for i in range(n)]


class Delivered:
    """kafka-python's FutureRecordMetadata of an acknowledged record."""

    is_done = True

    def failed(self) -> bool:
        return False

    def get(self, timeout=None):
        return "metadata"


class FakeProducer:
    """Stands in for kafka-python's KafkaProducer; ``outcomes`` decide each connection attempt."""

    attempts: list[str] = []
    instances: list["FakeProducer"] = []
    outcomes: list = []
    connecting = threading.Event()
    proceed = threading.Event()

    def __init__(self, bootstrap_servers, **config) -> None:
        FakeProducer.attempts.append(bootstrap_servers)
        FakeProducer.connecting.set()
        assert FakeProducer.proceed.wait(30), "the test never let the connection attempt finish"
        outcome = FakeProducer.outcomes.pop(0) if FakeProducer.outcomes else None
        if outcome is not None:
            raise outcome
        self.closed = False
        FakeProducer.instances.append(self)

    def send(self, topic, key=None, value=None, headers=None):
        return Delivered()

    def flush(self, timeout=None):
        pass

    def partitions_for(self, topic):
        return {0, 1}

    def close(self, timeout=None):
        self.closed = True


@pytest.fixture(autouse=True)
def fake():
    FakeProducer.attempts, FakeProducer.instances, FakeProducer.outcomes = [], [], []
    FakeProducer.connecting, FakeProducer.proceed = threading.Event(), threading.Event()
    FakeProducer.proceed.set()


def lazy_producer() -> LazyProducer:
    return LazyProducer("kafka:9092", kafka_producer=FakeProducer, max_block_ms=500)


def test_connects_on_first_send_only_and_retries_after_a_failure():
    lazy = lazy_producer()
    assert FakeProducer.attempts == []
    FakeProducer.outcomes = [ConnectionError("no brokers")]
    with pytest.raises(ConnectionError):
        lazy.send_events(events(1))
    assert lazy.send_events(events(2)) == 2  # the next call connects again
    assert lazy.send_events(events(1)) == 1
    assert FakeProducer.attempts == [["kafka:9092"], ["kafka:9092"]]


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
    lazy = lazy_producer()
    lazy._connect_lock = lock = WatchedLock()
    FakeProducer.outcomes = [ConnectionError("no brokers")]
    FakeProducer.proceed.clear()  # the first attempt hangs until released
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(lazy.send_events, events(1))
        assert FakeProducer.connecting.wait(30)
        second = pool.submit(lazy.send_events, events(1))
        assert lock.contended.wait(30)  # the second waits for the lock behind the first attempt
        FakeProducer.proceed.set()
        for call in (first, second):
            with pytest.raises(ConnectionError):
                call.result(timeout=30)
    assert len(FakeProducer.attempts) == 1  # the second did not wait out a timeout of its own


def test_close_closes_the_connection_and_refuses_later_sends():
    lazy = lazy_producer()
    lazy.close()  # never connected: nothing to close
    lazy = lazy_producer()
    lazy.send_events(events(1))
    lazy.close()
    assert [p.closed for p in FakeProducer.instances] == [True]
    with pytest.raises(ConnectionError):
        lazy.send_events(events(1))
    assert len(FakeProducer.attempts) == 1
