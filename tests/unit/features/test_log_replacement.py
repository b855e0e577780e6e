"""A broker that comes back with a new log (services/features/log_replacement.py and the
recovery's check, rewind and screen), on in-memory marks, a fake log and fake messages."""
import asyncio

from faust.types import TP
from prometheus_client import CollectorRegistry

from services.common.stores.recovery_marks import MemoryRecoveryMarks
from services.features.log_replacement import BrokerWatch, DeliveryScreen, Fingerprint, bootstrap_addresses
from services.features.metrics import FeaturesMetrics
from services.features.recovery import LogOffsets, Recovery

EVENTS0, EVENTS1 = TP("events", 0), TP("events", 1)


class Msg:
    """A faust Message as far as the recovery reads one."""

    def __init__(self, tp, offset, value=None):
        self.tp, self.topic, self.partition, self.offset = tp, tp.topic, tp.partition, offset
        self.key = b"user"
        self.value = value if value is not None else f"old-{tp.partition}-{offset}".encode()
        self.timestamp = 1000.0 + offset


class FakeLog:
    def __init__(self, offsets, records=None):
        self.offsets_ = offsets
        self.records = records or {}  # (tp, offset) -> Fingerprint
        self.replays = []

    async def offsets(self, tps):
        return {tp: self.offsets_[tp] for tp in tps}

    async def read_at(self, points):
        return {tp: self.records[(tp, offset)] for tp, offset in points.items()}

    async def replay(self, starts, apply):
        self.replays.append(dict(starts))
        return {tp: self.offsets_[tp].end for tp in starts}

    async def close(self):
        pass


def make(log):
    marks = MemoryRecoveryMarks()
    metrics = FeaturesMetrics(CollectorRegistry())
    recovery = Recovery(marks, log, {"events": None}, metrics, check_interval_s=1.0)
    seeks = []

    async def seek(offsets):
        seeks.extend(offsets.items())

    recovery._seek = seek
    return recovery, marks, metrics, seeks


def replacements(metrics):
    return sum(s.value for m in metrics.log_replacements.collect() for s in m.samples if s.name.endswith("_total"))


async def started(log, read=(EVENTS0, 9)):
    """A worker that owns events:0 with its mark at 0 and has read and written 0..9."""
    recovery, marks, metrics, seeks = make(log)
    recovery.on_assigned({EVENTS0})
    await recovery.check()
    for offset in range(read[1] + 1):
        message = Msg(EVENTS0, offset)
        recovery.on_delivered(EVENTS0, message)
        recovery.on_written(EVENTS0, offset, message)
    await recovery.check()
    assert marks.values["events:0"] == 10
    return recovery, marks, metrics, seeks


async def test_the_same_log_after_the_broker_went_away_reopens_the_gate():
    old = Fingerprint.of_message(Msg(EVENTS0, 9))
    log = FakeLog({EVENTS0: LogOffsets(0, 10, None)}, {(EVENTS0, 9): old})
    recovery, marks, metrics, seeks = await started(log)
    recovery.on_broker_lost()
    assert not recovery.gate.is_open  # nothing is written until the log is checked
    await recovery.check()
    assert recovery.gate.is_open and seeks == [] and replacements(metrics) == 0
    assert marks.values["events:0"] == 10


async def test_a_log_that_ends_before_the_last_record_read_is_read_again_from_its_beginning():
    log = FakeLog({EVENTS0: LogOffsets(0, 3, None)})  # the new log: 3 records so far
    recovery, marks, metrics, seeks = await started(log)
    recovery.on_broker_lost()
    await recovery.check()
    assert seeks == [(EVENTS0, 0)] and marks.values["events:0"] == 0
    assert replacements(metrics) == 1 and recovery.gate.is_open


async def test_a_log_holding_another_record_at_the_last_offset_read_is_replaced():
    other = Fingerprint(9, b"user", b"new-9", 5000)
    log = FakeLog({EVENTS0: LogOffsets(0, 40, None)}, {(EVENTS0, 9): other})  # already past it
    recovery, marks, metrics, seeks = await started(log)
    recovery.on_broker_lost()
    await recovery.check()
    assert seeks == [(EVENTS0, 0)] and replacements(metrics) == 1


async def test_after_a_rewind_old_records_are_written_new_ones_fetched_before_the_seek_dropped():
    log = FakeLog({EVENTS0: LogOffsets(0, 3, None), EVENTS1: LogOffsets(0, 0, None)})
    recovery, marks, metrics, seeks = make(log)
    recovery.on_assigned({EVENTS0, EVENTS1})
    await recovery.check()
    # Handed out before the broker went away: 0..9 of events:0 (8, 9 not written yet), 0..4 of events:1.
    queued_old = [Msg(EVENTS0, 8), Msg(EVENTS0, 9)]
    for offset in range(8):
        message = Msg(EVENTS0, offset)
        recovery.on_delivered(EVENTS0, message)
        recovery.on_written(EVENTS0, offset, message)
    for message in queued_old:
        recovery.on_delivered(EVENTS0, message)
    for offset in range(5):
        recovery.on_delivered(EVENTS1, Msg(EVENTS1, offset))
    recovery.on_broker_lost()
    # From the new log, before the check: offsets 10, 11 of events:0 (past what was read).
    fetched_early = [Msg(EVENTS0, 10, b"new-10"), Msg(EVENTS0, 11, b"new-11")]
    log.offsets_[EVENTS1] = LogOffsets(0, 2, None)  # its new log: 2 records, below the 5 read
    await recovery.check()
    assert sorted(seeks) == [(EVENTS0, 0), (EVENTS1, 0)]
    # The consumer: a record of the batch fetched before the seek is dropped before faust sees it;
    # the new read's first record is let through.
    screen = recovery.screen
    assert not screen.admit(EVENTS0, Msg(EVENTS0, 12, b"new-12"))
    first_new = Msg(EVENTS0, 0, b"new-0")
    assert screen.admit(EVENTS0, first_new)
    again = [first_new, Msg(EVENTS0, 1, b"new-1")]
    assert screen.admit(EVENTS0, again[1])  # from then on everything
    # The writer's queue, in delivery order: old records, early new ones, the new read.
    kept = recovery._screen_fenced([*queued_old, *fetched_early, *again])
    assert kept == [*queued_old, *again]
    # The marks count the new log only: the old records' and the dropped ones' writes say nothing of it.
    for message in [*queued_old, *fetched_early, *again]:
        recovery.on_written(EVENTS0, message.offset, message)
    await recovery.check()
    assert marks.values["events:0"] == 2


async def test_writes_between_the_rewind_and_the_new_read_do_not_move_the_mark():
    log = FakeLog({EVENTS0: LogOffsets(0, 3, None)})
    recovery, marks, metrics, seeks = await started(log)
    recovery.on_broker_lost()
    late = Msg(EVENTS0, 9)  # written before the rewind, acked after it
    await recovery.check()
    recovery.on_written(EVENTS0, 9, late)
    await recovery.check()
    assert marks.values["events:0"] == 0


def test_the_screen_holds_the_first_new_record_weakly():
    screen = DeliveryScreen()
    screen.start(EVENTS0, 9)
    message = Msg(EVENTS0, 0)
    assert screen.admit(EVENTS0, message) and screen.first_new(EVENTS0) is message
    del message
    assert screen.first_new(EVENTS0) is None  # faust's rebalance waits for it to be acked or gone
    assert screen.admit(EVENTS1, Msg(EVENTS1, 50))  # other partitions pass


def test_bootstrap_addresses():
    assert bootstrap_addresses("kafka://a:9093, b:1,") == [("a", 9093), ("b", 1)]


async def test_the_watch_calls_on_lost_when_the_broker_closes_the_connection():
    connections = []

    async def accept(reader, writer):
        connections.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lost = asyncio.Event()
    watch = BrokerWatch(f"127.0.0.1:{port}", lost.set, retry_s=0.05)
    task = asyncio.create_task(watch.run())
    try:
        for _ in range(200):
            if connections:
                break
            await asyncio.sleep(0.01)
        assert connections and not lost.is_set()
        connections[0].close()  # the broker goes away
        await asyncio.wait_for(lost.wait(), 5)
    finally:
        task.cancel()
        server.close()


async def test_the_worker_consumer_hands_on_only_what_the_screen_admits(monkeypatch):
    from types import SimpleNamespace

    from faust.transport.drivers import aiokafka as faust_aiokafka

    from services.features.transport import _Consumer

    fetched = [Msg(EVENTS0, 12, b"new-12"), Msg(EVENTS1, 3), Msg(EVENTS0, 0, b"new-0"), Msg(EVENTS0, 1, b"new-1")]

    async def faust_getmany(self, timeout):  # faust's own, as the batch it was iterating
        for message in fetched:
            yield message.tp, message

    monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", faust_getmany)
    consumer = object.__new__(_Consumer)
    consumer.transport = SimpleNamespace(delivery_screen=None)
    assert [m async for _, m in consumer.getmany(1.0)] == fetched  # no screen: all of it
    screen = DeliveryScreen()
    consumer.transport.delivery_screen = screen
    screen.start(EVENTS0, 9)
    assert [m async for _, m in consumer.getmany(1.0)] == fetched[1:]


async def test_records_the_consumer_took_but_faust_never_handed_out_are_read_again():
    """faust drops a batch fetched while a rebalance stopped its flow and seeks back to the
    committed offsets; with none committed (a broker that came back empty) nothing seeks."""
    log = FakeLog({EVENTS0: LogOffsets(0, 600, None)})
    recovery, marks, metrics, seeks = make(log)
    positions = {EVENTS0: 0}

    async def position(tp):
        return positions[tp]

    recovery._position = position
    recovery.on_assigned({EVENTS0})
    await recovery.check()  # mark 0
    positions[EVENTS0] = 600  # took 0..599, handed out none
    await recovery.check()
    assert seeks == []  # once could be a batch on its way
    await recovery.check()
    assert seeks == [(EVENTS0, 0)]
    # Handed out and written up to 9 while the consumer is at 10: nothing to do.
    seeks.clear()
    for offset in range(10):
        message = Msg(EVENTS0, offset)
        recovery.on_delivered(EVENTS0, message)
        recovery.on_written(EVENTS0, offset, message)
    positions[EVENTS0] = 10
    await recovery.check()
    await recovery.check()
    assert seeks == []
    # Handed out up to 9, not yet written: on its way, whatever the position.
    recovery.on_delivered(EVENTS0, Msg(EVENTS0, 10))
    positions[EVENTS0] = 50
    await recovery.check()
    await recovery.check()
    assert seeks == []
