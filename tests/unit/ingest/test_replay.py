import pytest
from kafka.errors import KafkaTimeoutError
from shopstream.events.v1 import events_pb2

from services.ingest.replay import (
    TokenBucket, event_id, interleave, paced_batches, parse_type_mix, replay, select, to_events,
)
from services.contract.validation import validate_event

SEQS = {"a": ["1", "2", "3"], "b": ["4"], "c": ["5", "6"]}


def test_interleave_round_robin_keeps_user_order():
    assert [(u, i) for u, _, i in interleave(SEQS)] == [
        ("a", "1"), ("b", "4"), ("c", "5"), ("a", "2"), ("c", "6"), ("a", "3")]


def test_select_users_and_holdout():
    assert select(SEQS, users=2) == {"a": ["1", "2", "3"], "b": ["4"]}
    assert select(SEQS, holdout=1) == {"a": ["1", "2"], "c": ["5"]}  # b has nothing left


def test_event_ids_are_stable_and_distinct():
    assert event_id("a", 0) == event_id("a", 0)
    assert len({event_id(u, p) for u in "abc" for p in range(50)}) == 150
    first = [e.event_id for e in to_events(SEQS)]
    second = [e.event_id for e in to_events(SEQS)]
    assert first == second and len(set(first)) == 6


def test_events_are_valid_and_follow_the_type_mix():
    events = list(to_events({f"u{i}": ["1"] * 20 for i in range(50)}, {"view": 0.5, "purchase": 0.5},
                            clock=lambda: 1_700_000_000.0))
    for ev in events:
        validate_event(ev)
    share = sum(ev.type == events_pb2.EVENT_TYPE_PURCHASE for ev in events) / len(events)
    assert 0.4 < share < 0.6
    assert [e.type for e in events] == [e.type for e in to_events({f"u{i}": ["1"] * 20 for i in range(50)},
                                                                    {"view": 0.5, "purchase": 0.5})]


def test_parse_type_mix():
    assert parse_type_mix("view=0.7, purchase=0.3") == {"view": 0.7, "purchase": 0.3}
    with pytest.raises(ValueError):
        parse_type_mix("teleport=1")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_token_bucket_paces_to_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=10, clock=clock, sleep=clock.sleep)
    batches = list(paced_batches(range(1000), rate=100, batch_size=10, bucket=bucket))
    assert sum(map(len, batches)) == 1000
    assert clock.now == pytest.approx(9.9, rel=0.01)  # first burst is free, then 100/s


class RecordingProducer:
    def __init__(self):
        self.events = []

    def send_events(self, events, wait=True):
        self.events.extend(events)
        return len(events)

    def flush(self):
        pass


def test_replay_sends_everything_in_order():
    producer = RecordingProducer()
    assert replay(producer, SEQS, rate=None, holdout=1, batch_size=2) == 3
    assert [(e.user_id, e.item_id) for e in producer.events] == [("a", "1"), ("c", "5"), ("a", "2")]


class FlakyProducer(RecordingProducer):
    """Fails ``failures`` calls (sends and flushes alike) with a broker error, then works."""

    def __init__(self, failures: int, clock: FakeClock, seconds_per_failure: float = 1.0):
        super().__init__()
        self.failures, self.clock, self.seconds = failures, clock, seconds_per_failure
        self.calls = 0

    def _maybe_fail(self):
        self.calls += 1
        if self.failures:
            self.failures -= 1
            self.clock.now += self.seconds  # a failing send takes the producer's timeout
            raise KafkaTimeoutError("broker down")

    def send_events(self, events, wait=True):
        self._maybe_fail()
        return super().send_events(events, wait)

    def flush(self):
        self._maybe_fail()


def test_replay_rides_out_a_broker_outage():
    clock = FakeClock()
    producer = FlakyProducer(failures=5, clock=clock)
    assert replay(producer, SEQS, batch_size=2, max_outage_s=30, clock=clock, sleep=clock.sleep) == 6
    assert [e.event_id for e in producer.events] == [e.event_id for e in to_events(SEQS)]  # none lost or reordered


def test_replay_gives_up_after_max_outage():
    clock = FakeClock()
    producer = FlakyProducer(failures=1000, clock=clock)
    with pytest.raises(KafkaTimeoutError):
        replay(producer, SEQS, batch_size=2, max_outage_s=10, clock=clock, sleep=clock.sleep)
    assert 10 <= clock.now < 13 and producer.events == []
