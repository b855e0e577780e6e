"""The recovery decisions (services/features/recovery.py) on in-memory marks and a fake log."""
import asyncio

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from services.common.stores.recovery_marks import MemoryRecoveryMarks
from services.features.metrics import FeaturesMetrics
from services.features.recovery import LogOffsets, Recovery, WriteGate, mark_field

EVENTS0, EVENTS1 = TP("events", 0), TP("events", 1)


class FakeLog:
    """Offsets per partition; a replay records its starts and ends at ``end`` (``during`` runs
    inside the first replay, e.g. a second FLUSHALL)."""

    def __init__(self, offsets: dict, during=None) -> None:
        self.offsets_ = offsets
        self.replays: list[dict] = []
        self.during = during
        self.closed = False

    async def offsets(self, tps):
        return {tp: self.offsets_[tp] for tp in tps}

    async def replay(self, starts, apply):
        self.replays.append(dict(starts))
        if self.during is not None:
            during, self.during = self.during, None
            during()
        return {tp: max(start, self.offsets_[tp].end) for tp, start in starts.items()}

    async def close(self):
        self.closed = True


def make(log: FakeLog, marks: MemoryRecoveryMarks | None = None):
    marks = marks if marks is not None else MemoryRecoveryMarks()
    metrics = FeaturesMetrics(CollectorRegistry())
    recovery = Recovery(marks, log, {"events": None}, metrics, check_interval_s=1.0)
    return recovery, marks, metrics


def rebuilds(metrics: FeaturesMetrics, reason: str) -> float:
    return sum(s.value for m in metrics.rebuilds.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels["reason"] == reason)


async def test_a_new_group_marks_the_log_start_and_replays_nothing():
    log = FakeLog({EVENTS0: LogOffsets(5, 20, None), EVENTS1: LogOffsets(0, 0, None)})
    recovery, marks, metrics = make(log)
    recovery.on_assigned({EVENTS0, EVENTS1, TP("dlq", 0)})
    assert not recovery.gate.is_open
    await recovery.check()
    assert recovery.gate.is_open and log.replays == []
    assert marks.values == {"events:0": 5, "events:1": 0}
    for offset in range(5, 12):  # the agents write 5..11
        recovery.on_written(EVENTS0, offset)
    await recovery.check()
    assert marks.values["events:0"] == 12


async def test_a_lost_mark_with_committed_offsets_replays_from_the_beginning():
    log = FakeLog({EVENTS0: LogOffsets(0, 30, 30)})
    recovery, marks, metrics = make(log)
    recovery.on_assigned({EVENTS0})
    await recovery.check()
    assert log.replays == [{EVENTS0: 0}] and marks.values == {"events:0": 30}
    assert rebuilds(metrics, "missing") == 1 and recovery.gate.is_open


async def test_a_mark_behind_the_committed_offset_replays_the_gap():
    marks = MemoryRecoveryMarks()
    marks.values["events:0"] = 12
    log = FakeLog({EVENTS0: LogOffsets(0, 30, 20)})
    recovery, _, metrics = make(log, marks)
    recovery.on_assigned({EVENTS0})
    await recovery.check()
    assert log.replays == [{EVENTS0: 12}] and marks.values["events:0"] == 30
    assert rebuilds(metrics, "behind") == 1


async def test_at_runtime_a_flush_and_a_rollback_are_detected_and_replayed():
    log = FakeLog({EVENTS0: LogOffsets(0, 40, None)})
    recovery, marks, metrics = make(log)
    recovery.on_assigned({EVENTS0})
    await recovery.check()
    for offset in range(0, 25):
        recovery.on_written(EVENTS0, offset)
    await recovery.check()
    assert marks.values["events:0"] == 25

    marks.clear()  # FLUSHALL
    await recovery.check()
    assert log.replays == [{EVENTS0: 0}] and marks.values["events:0"] == 40
    assert rebuilds(metrics, "missing") == 1 and recovery.gate.is_open

    marks.values["events:0"] = 10  # a promoted replica's older mark
    await recovery.check()
    assert log.replays[-1] == {EVENTS0: 10} and marks.values["events:0"] == 40
    assert rebuilds(metrics, "rolled_back") == 1


async def test_a_flush_during_the_replay_replays_again():
    marks = MemoryRecoveryMarks()
    log = FakeLog({EVENTS0: LogOffsets(0, 30, 30)}, during=marks.clear)
    recovery, _, metrics = make(log, marks)
    recovery.on_assigned({EVENTS0})
    await recovery.check()
    assert log.replays == [{EVENTS0: 0}, {EVENTS0: 0}] and marks.values["events:0"] == 30
    assert rebuilds(metrics, "missing") == 2


async def test_shutdown_advances_the_marks_to_what_was_written():
    log = FakeLog({EVENTS0: LogOffsets(0, 0, None)})
    recovery, marks, _ = make(log)
    recovery.on_assigned({EVENTS0})
    await recovery.check()
    recovery.on_written(EVENTS0, 0)
    recovery.on_written(EVENTS0, 1)
    await recovery.close()
    assert marks.values["events:0"] == 2 and log.closed


async def test_the_gate_holds_writes_and_drains_the_ones_inside():
    gate = WriteGate()
    entered, release = asyncio.Event(), asyncio.Event()

    async def write(records):
        entered.set()
        await release.wait()
        return len(records)

    waiting = asyncio.ensure_future(gate.run(write, [1, 2]))
    await asyncio.sleep(0)
    assert not entered.is_set()  # closed until opened
    gate.open()
    await entered.wait()
    drained = asyncio.ensure_future(gate.close_and_drain())
    await asyncio.sleep(0)
    assert not drained.done()  # a write is inside
    release.set()
    assert await waiting == 2
    await drained
    assert not gate.is_open


def test_mark_field():
    assert mark_field(EVENTS1) == "events:1"


@pytest.mark.parametrize("expected,new,start,after", [(5, 9, 5, 9), (5, 3, 5, 5), (7, 9, 5, 5)])
async def test_memory_marks_advance_like_the_script(expected, new, start, after):
    marks = MemoryRecoveryMarks()
    marks.values["f"] = start
    assert (await marks.advance({"f": (expected, new), "gone": (0, 1)})) == {"f": after, "gone": None}
    assert "gone" not in marks.values
