"""Recovery when Redis loses data anyway: detect it with recovery marks, replay the Kafka log.

Redis is the worker's only copy of user state, trending and the catalog; Kafka's
retained log is the source they were built from. A *recovery mark* per partition of
the events and catalog topics (``services/common/stores/recovery_marks.py``) says
"Redis holds the effect of every record of this partition below offset M". The
worker keeps it up to date and checks it:

- **on assignment** (start-up and every rebalance), before any write: the agents'
  writes wait at a gate until the check is done. Mark gone while the group's
  committed offset is past the log's beginning: state was built and is lost
  (FLUSHALL, a restart without persistence): replay from the log's beginning.
  Mark below the committed offset: Redis may lack ``[M, committed)`` (a worker
  killed between two marks, an AOF that lost its last second): replay from M.
  No mark and nothing committed: a new group, built from the log as it comes.
- **every** ``recovery_check_interval_s``: one script call advances every owned
  partition's mark to what the agents have written (``Consumer`` acks an event only
  after its write, see ``agents``). The script never recreates a missing mark, and
  it reports a mark lower than this worker last saw (a replica promoted without the
  latest writes): both start a replay.
- at revocation and shutdown, after faust's final commit: the marks of the
  partitions given up, so the next owner does not replay what is already there.

A replay reads the partitions with a consumer of its own (no group, nothing
committed) from the start offset to the end offset it found, through the same
processors as the agents (dead letters are not sent again; its metrics stay off
``/metrics``, the rebuild counters aside), while the agents' writes wait at the
gate: every user's events apply in log order. Dedup does the rest: the replayed
events whose effects survived count once, and the agents' events the replay
already applied are redeliveries. Then the mark is raised to the end offset, by
the same never-recreate script, so a second loss during the replay starts it
again. Limits (the log's retention, trending's decay, events written between a
loss and its detection): docs/redis-keys.md, "Recovery marks".

The other way round, the broker may come back with a new log (the embedded broker's
restart: memory storage): when its watch connection closes, the worker holds its writes
and checks that the broker still holds the last record it read per partition; a replaced
partition gets its mark at the new log's beginning and is read again from there, what was
fetched of the new log before that being dropped (``_check_log``, ``_rewind``,
``_screen_fenced``; log_replacement.py says why).
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from services.common.stores.recovery_marks import RecoveryMarks
from services.features.log_replacement import BrokerWatch, DeliveryScreen, Fingerprint
from services.features.metrics import FeaturesMetrics
from services.features.processing import CatalogBatchProcessor, EventBatchProcessor, Record, SourceRecord

logger = logging.getLogger(__name__)

Apply = Callable[[Sequence[Record]], Awaitable[int]]


def mark_field(tp: Any) -> str:
    """The field of a partition's mark: ``<topic>:<partition>``."""
    return f"{tp.topic}:{tp.partition}"


class WriteGate:
    """Holds the agents' writes while a partition's state is checked or replayed.

    ``close_and_drain`` returns once no write is inside, so a replay never runs
    beside an agent's write (a user's events would apply out of order)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._inside = 0

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.clear()

    async def close_and_drain(self) -> None:
        self.close()
        await self._idle.wait()

    async def run(self, write: Apply, records: Sequence[Record]) -> int:
        while not self._open.is_set():
            await self._open.wait()
        self._inside += 1
        self._idle.clear()
        try:
            return await write(records)
        finally:
            self._inside -= 1
            if not self._inside:
                self._idle.set()


class GatedProcessor:
    """A processor whose ``process`` passes the gate first, then ``screen`` (which may drop
    records); everything else is the processor's."""

    def __init__(self, processor: Any, gate: WriteGate,
                 screen: Callable[[Sequence[Record]], Sequence[Record]] | None = None) -> None:
        self._processor = processor
        self._gate = gate
        self._screen = screen

    async def process(self, records: Sequence[Record]) -> int:
        return await self._gate.run(self._write, records)

    async def _write(self, records: Sequence[Record]) -> int:
        if self._screen is not None:
            records = self._screen(records)
            if not records:
                return 0
        return await self._processor.process(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)


class WrittenSensor(faust.Sensor):
    """faust's public sensor hooks: a message handed to the streams (``on_message_in``), and
    an event whose message is acked by its last stream has been written (the agents ack after
    the write), so its offset is written."""

    def __init__(self, on_written: Callable[[Any, int, Any], None], on_delivered: Callable[[Any, Any], None]) -> None:
        super().__init__()
        self._on_written = on_written
        self._on_delivered = on_delivered

    def on_message_in(self, tp, offset, message) -> None:
        self._on_delivered(tp, message)

    def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:
        if event.message.acked:
            self._on_written(tp, offset, event.message)


class LogOffsets(NamedTuple):
    earliest: int
    end: int
    committed: int | None  # the consumer group's, None when it never committed


class KafkaPartitionLog:
    """The retained log, read beside faust's consumer with aiokafka's public API: offsets
    (the group's committed ones looked up, never written) and replays by a group-less consumer."""

    def __init__(self, bootstrap_servers: str, group_id: str, max_records: int) -> None:
        self._bootstrap = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
        self._group_id = group_id
        self._max_records = max_records
        self._lookup: AIOKafkaConsumer | None = None

    async def _lookup_consumer(self) -> AIOKafkaConsumer:
        if self._lookup is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=self._group_id,
                                        enable_auto_commit=False, client_id=f"{self._group_id}-recovery")
            await consumer.start()  # never subscribes nor assigns: it joins no group
            self._lookup = consumer
        return self._lookup

    async def offsets(self, tps: Collection[Any]) -> dict[Any, LogOffsets]:
        consumer = await self._lookup_consumer()
        parts = {tp: TopicPartition(tp.topic, tp.partition) for tp in tps}
        earliest = await consumer.beginning_offsets(list(parts.values()))
        end = await consumer.end_offsets(list(parts.values()))
        out = {}
        for tp, part in parts.items():
            committed = await consumer.committed(part)
            out[tp] = LogOffsets(earliest[part], end[part], committed)
        return out

    async def read_at(self, points: Mapping[Any, int], timeout_s: float = 5.0) -> dict[Any, Fingerprint]:
        """The record at ``points[tp]`` of each partition (which must hold it: below its end
        offset); TimeoutError when one does not come within ``timeout_s``."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False,
                                    client_id=f"{self._group_id}-check")
        await consumer.start()
        try:
            parts = {TopicPartition(tp.topic, tp.partition): tp for tp in points}
            consumer.assign(list(parts))
            for part, tp in parts.items():
                consumer.seek(part, points[tp])
            found: dict[Any, Fingerprint] = {}
            deadline = time.monotonic() + timeout_s
            while len(found) < len(parts):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"records {points} not read back within {timeout_s}s")
                waiting = [p for p, tp in parts.items() if tp not in found]
                fetched = await consumer.getmany(*waiting, timeout_ms=int(min(left, 1.0) * 1000), max_records=1)
                for part, rows in fetched.items():
                    if rows:
                        found[parts[part]] = Fingerprint.of_record(rows[0])
                        consumer.pause(part)
            return found
        finally:
            await consumer.stop()

    async def replay(self, starts: Mapping[Any, int], apply: Apply) -> dict[Any, int]:
        """Apply every record from ``starts[tp]`` at least up to the end offset found now; returns
        each partition's position after the last record applied (all below it are applied).

        Records past that end offset are applied too (the agents see them again as duplicates):
        the replay stops at the end of a fetched batch, and tansu reports as end offset the
        last batch's base offset + 1, not its last record's offset + 1."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False,
                                    client_id=f"{self._group_id}-replay")
        await consumer.start()
        try:
            parts = {tp: TopicPartition(tp.topic, tp.partition) for tp in starts}
            consumer.assign(list(parts.values()))
            ends = await consumer.end_offsets(list(parts.values()))
            remaining = set()
            for tp, part in parts.items():
                consumer.seek(part, starts[tp])
                if starts[tp] < ends[part]:
                    remaining.add(part)
            while remaining:
                fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=self._max_records)
                records = [SourceRecord(r.topic, r.partition, r.offset, r.timestamp / 1000.0, r.key, r.value,
                                        tuple(r.headers or ()))
                           for rows in fetched.values() for r in rows]
                if records:
                    await apply(records)
                for part in list(remaining):
                    if await consumer.position(part) >= ends[part]:
                        remaining.discard(part)
            return {tp: max(starts[tp], await consumer.position(part)) for tp, part in parts.items()}
        finally:
            await consumer.stop()

    async def close(self) -> None:
        if self._lookup is not None:
            await self._lookup.stop()
            self._lookup = None


@dataclass
class _Owned:
    expected: int  # the mark as this worker last wrote or read it
    written: int | None = None  # highest offset the agents wrote since the mark was checked
    rewinding: bool = False  # the log was replaced: writes count once the new log's first record comes


class Recovery:
    """Detects lost Redis state per owned partition and replays it (see the module doc)."""

    def __init__(self, marks: RecoveryMarks, log: Any, replayers: Mapping[str, Apply], metrics: FeaturesMetrics,
                 check_interval_s: float, final_timeout_s: float = 2.0) -> None:
        self.gate = WriteGate()
        self._marks = marks
        self._log = log
        self._replayers = dict(replayers)  # topic -> process of a replay processor
        self._metrics = metrics
        self._interval = check_interval_s
        self._final_timeout_s = final_timeout_s
        self._owned: dict[Any, _Owned] = {}
        self._assigned: frozenset = frozenset()
        self._generation = 0  # one per assignment
        self._checked = -1  # the generation whose first check is done
        self._wake = asyncio.Event()
        self._marks_lock = asyncio.Lock()  # a rewind's mark against a concurrent advance
        # A broker that comes back with a new log (log_replacement.py).
        self.screen = DeliveryScreen()
        self._seek: Callable[[Mapping[Any, int]], Awaitable[None]] | None = None
        # Per partition, the last message handed to the streams (a copy: faust waits at a rebalance
        # until every message it handed out is acked or gone, and drops its queues' ones).
        self._last_in: dict[Any, tuple] = {}  # (offset, key, value, timestamp in s)
        self._suspect: dict[Any, Fingerprint] | None = None  # to check: the last records read before it went
        self._fences: dict[Any, int] = {}  # partitions read again from a new log's beginning: last old offset
        self._unmarked: weakref.WeakSet = weakref.WeakSet()  # messages whose write says nothing of the new log
        self._watch: BrokerWatch | None = None
        # Records the consumer took but faust never handed out (see _find_dropped).
        self._position: Callable[[Any], Awaitable[int | None]] | None = None
        self._delivered: dict[Any, int] = {}  # per partition: the last offset handed out since assignment
        self._stalled: dict[Any, tuple] = {}  # per partition: (delivered, position) seen by the last round

    def gated(self, processor: Any) -> GatedProcessor:
        return GatedProcessor(processor, self.gate, self._screen_fenced)

    def watch_broker(self, bootstrap_servers: str) -> None:
        """Check the log whenever a connection to one of these addresses closes (``BrokerWatch``)."""
        self._watch = BrokerWatch(bootstrap_servers, self.on_broker_lost)

    def register(self, app: faust.App) -> None:
        """The hooks on the faust app: the sensor, the check loop, the rebalance signals, the
        worker consumer's delivery screen and the broker watch."""
        watch = self._watch
        app.sensors.add(WrittenSensor(self.on_written, self.on_delivered))
        app.transport.delivery_screen = self.screen
        # faust's public Consumer.seek_wait: the seek runs on the consumer's own thread (Consumer.seek
        # would call the aiokafka client from this one) and faust's read offsets follow it.
        self._seek = lambda offsets: app.consumer.seek_wait(offsets)
        self._position = lambda tp: app.consumer.position(tp)  # faust's public Consumer.position

        @app.task
        async def check_recovery_marks():
            await self.run()

        if watch is not None:
            @app.task
            async def watch_broker():
                await watch.run()

        @app.on_partitions_revoked.connect
        async def mark_revoked(app, revoked, **kwargs):  # after faust's wait_empty: all written
            await self._final_marks(revoked)

        @app.on_partitions_assigned.connect
        async def check_assigned(app, assigned, **kwargs):
            self.on_assigned(assigned)

    # Called by faust (on the loop).
    def on_assigned(self, assigned: Collection[Any]) -> None:
        self._assigned = frozenset(tp for tp in assigned if tp.topic in self._replayers)
        self._owned.clear()
        self._fences.clear()  # faust seeks every partition to its committed offset itself
        self.screen.clear()
        self._delivered.clear()
        self._stalled.clear()
        self._last_in = {tp: m for tp, m in self._last_in.items() if tp in self._assigned}
        self._generation += 1
        self.gate.close()  # nothing is written before the new partitions' marks are checked
        self._wake.set()

    def on_written(self, tp: Any, offset: int, message: Any = None) -> None:
        owned = self._owned.get(tp)
        if owned is None or owned.rewinding or (message is not None and message in self._unmarked):
            return
        if owned.written is None or offset > owned.written:
            owned.written = offset

    def on_delivered(self, tp: Any, message: Any) -> None:
        self._last_in[tp] = (message.offset, message.key, message.value, message.timestamp)
        self._delivered[tp] = message.offset

    def on_broker_lost(self) -> None:
        """The broker went away (BrokerWatch): hold the writes until its log is checked. The
        last record handed out per partition is taken now, before a new log can hand out any."""
        taken = {tp: Fingerprint(offset, key, value, round(ts * 1000))
                 for tp, (offset, key, value, ts) in self._last_in.items() if tp in self._assigned}
        if self._suspect is None:
            self._suspect = taken
        else:  # gone again before the check: the older records are the ones of the log we read
            self._suspect = {**taken, **self._suspect}
        self.gate.close()
        self._wake.set()

    async def run(self) -> None:
        """Check every ``check_interval_s`` (at once after an assignment) until cancelled."""
        while True:
            try:  # while the broker's log is to be checked, often: the writes wait for it
                await asyncio.wait_for(self._wake.wait(), 0.2 if self._suspect is not None else self._interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or Kafka away: the next round tries again (the gate stays as it is)
                if self._suspect is not None:  # the broker is not back yet: tried again in 0.2 s
                    logger.info("broker's log not checked yet (%r); retrying", exc)
                else:
                    logger.warning("recovery check failed; retrying", exc_info=True)

    async def check(self) -> None:
        if self._suspect is not None:
            await self._check_log()
        generation = self._generation
        if self._checked != generation:
            await self._check_assigned(self._assigned)
            if generation == self._generation:
                self._checked = generation
                self._open_gate()
            return
        await self._advance()

    def _open_gate(self) -> None:
        if self._checked == self._generation and self._suspect is None:
            self.gate.open()

    # A broker that came back with a new log (log_replacement.py).
    async def _check_log(self) -> None:
        """Does the broker still hold the last record read from each partition? A partition
        whose log now ends before it, or holds another record there, is read again from its
        new beginning."""
        taken = {tp: fp for tp, fp in self._suspect.items() if tp in self._assigned}
        replaced: dict[Any, int] = {}
        if taken:
            offsets = await asyncio.wait_for(self._log.offsets(taken), 5.0)  # the topics may not be back yet
            for tp, fp in taken.items():
                if offsets[tp].end <= fp.offset:
                    replaced[tp] = offsets[tp].earliest
            kept = {tp: fp.offset for tp, fp in taken.items() if tp not in replaced}
            if kept:
                found = await self._log.read_at(kept)
                replaced.update({tp: offsets[tp].earliest for tp in kept if found[tp] != taken[tp]})
        if replaced:
            await self._rewind(replaced, taken)  # raises, the log still to check, if the seek fails
        else:
            logger.info("broker back with the same log", extra={"partitions": len(taken)})
        self._suspect = None
        self._open_gate()

    async def _rewind(self, replaced: dict[Any, int], taken: Mapping[Any, Fingerprint]) -> None:
        """Read each replaced partition again from its new log's beginning: its mark there (the
        new log's records are applied from it), the consumer sought there (faust's public
        ``Consumer.seek_wait``, which also forgets faust's read offset); what was read of the old log
        but not yet written is still written, what came of the new log before the seek is
        dropped (``_screen_fenced``, ``DeliveryScreen``): it comes again, in order. A seek that
        fails (the partitions revoked meanwhile) leaves the log to be checked again next round."""
        await self.gate.close_and_drain()
        async with self._marks_lock:
            await self._marks.set({mark_field(tp): start for tp, start in replaced.items()})
            for tp, start in replaced.items():
                self._owned[tp] = _Owned(expected=start, rewinding=start <= taken[tp].offset)
        for tp, start in replaced.items():
            if start <= taken[tp].offset:
                self._fences[tp] = taken[tp].offset
                self.screen.start(tp, taken[tp].offset)
        for tp in replaced:
            self._delivered.pop(tp, None)
            self._stalled.pop(tp, None)
        await self._seek(replaced)
        for tp, start in replaced.items():
            self._metrics.log_replacements.labels(tp.topic).inc()
            logger.error("recovery: the broker's log of %s was replaced (its record %d is gone): reading it "
                         "again from offset %d", mark_field(tp), taken[tp].offset, start,
                         extra={"partition": mark_field(tp), "last_read": taken[tp].offset, "start": start})

    def _screen_fenced(self, records: Sequence[Record]) -> Sequence[Record]:
        """Inside the gate: the records of a partition read again from a new log's beginning,
        until that read's first record (``DeliveryScreen.first_new``): those of the old log are
        written (below or at its last offset), those of the new log fetched before the seek are
        dropped; neither counts for the partition's mark."""
        fences = self._fences
        if not fences:
            return records
        kept = []
        for rec in records:
            tp = rec.tp
            last_old = fences.get(tp)
            if last_old is None:
                kept.append(rec)
                continue
            if rec is self.screen.first_new(tp):  # the new read begins: writes count again
                del fences[tp]
                self.screen.done(tp)
                owned = self._owned.get(tp)
                if owned is not None:
                    owned.rewinding = False
                kept.append(rec)
                continue
            self._unmarked.add(rec)
            if rec.offset <= last_old:
                kept.append(rec)
        return kept

    async def close(self) -> None:
        """At shutdown, after faust's last commit: the final marks, then the Kafka client."""
        try:
            await self._final_marks(list(self._owned))
        finally:
            await self._log.close()

    # The checks.
    async def _check_assigned(self, tps: Collection[Any]) -> None:
        self._owned = {tp: o for tp, o in self._owned.items() if tp in tps}
        if not tps:
            return
        marks = await self._marks.read([mark_field(tp) for tp in tps])
        offsets = await self._log.offsets(tps)
        starts: dict[Any, tuple[int, str]] = {}
        fresh: dict[Any, int] = {}
        for tp in tps:
            mark, log = marks[mark_field(tp)], offsets[tp]
            committed = log.committed
            if mark is None:
                if committed is not None and committed > log.earliest:
                    starts[tp] = (log.earliest, "missing")
                else:  # nothing built by this group yet: the agents build it as the log comes
                    fresh[tp] = log.earliest
            elif committed is not None and mark < committed:
                starts[tp] = (self._from(tp, mark, log), "behind")
            else:
                self._owned[tp] = _Owned(expected=mark)
        if fresh:
            await self._marks.set({mark_field(tp): offset for tp, offset in fresh.items()})
            self._owned.update({tp: _Owned(expected=offset) for tp, offset in fresh.items()})
        if starts:
            await self._rebuild(starts)

    async def _advance(self) -> None:
        owned = dict(self._owned)
        entries = {}
        for tp, o in owned.items():
            new = o.written + 1 if o.written is not None else o.expected
            entries[mark_field(tp)] = (o.expected, max(new, o.expected))
        async with self._marks_lock:
            if any(self._owned.get(tp) is not o for tp, o in owned.items()):
                return  # a rewind reset a mark meanwhile: the next round
            result = await self._marks.advance(entries) if entries else {}
        starts: dict[Any, tuple[int, str]] = {}
        missing = []
        for tp, o in owned.items():
            value = result[mark_field(tp)]
            if value is None:
                missing.append(tp)
            elif value < o.expected:
                starts[tp] = (value, "rolled_back")
            else:
                o.expected = value
        if missing:
            offsets = await self._log.offsets(missing)
            starts.update({tp: (offsets[tp].earliest, "missing") for tp in missing})
        if starts:
            # A replay that fails leaves the gate closed and its mark at its start offset, below
            # what this worker expects: the next round finds it rolled back and replays again.
            await self.gate.close_and_drain()
            await self._rebuild(starts)
        self._open_gate()
        await self._find_dropped()

    async def _find_dropped(self) -> None:
        """Records the consumer took but faust never handed out: seek back to them.

        faust drops a fetched batch when a rebalance stops its flow meanwhile, and then seeks
        back to the committed offsets (``Consumer.perform_seek``); where none is committed
        (a broker that came back empty, a new group) aiokafka does not seek, and the batch is
        lost. A partition is taken for such a case when, two rounds running, every record
        handed out was written and the consumer's position is past the next one (or, nothing
        handed out since the assignment, past the mark); it is sought back there (faust's
        public ``Consumer.seek_wait``). Should records still come, they are redeliveries."""
        if self._position is None or self._fences:
            return
        for tp, o in list(self._owned.items()):
            delivered = self._delivered.get(tp)
            if o.rewinding or delivered != o.written:  # records handed out are on their way to Redis
                self._stalled.pop(tp, None)
                continue
            nxt = delivered + 1 if delivered is not None else o.expected
            try:
                position = await asyncio.wait_for(self._position(tp), 1.0)
            except Exception:  # not assigned any more, or its position is being reset
                self._stalled.pop(tp, None)
                continue
            if position is None or position <= nxt:
                self._stalled.pop(tp, None)
                continue
            seen = (delivered, position)
            if self._stalled.get(tp) != seen:
                self._stalled[tp] = seen
                continue
            self._stalled.pop(tp, None)
            logger.warning("recovery: %s: the consumer is at offset %d but handed out nothing past %d: "
                           "reading from %d again", mark_field(tp), position, nxt - 1, nxt,
                           extra={"partition": mark_field(tp), "position": position, "next": nxt})
            await self._seek({tp: nxt})

    @staticmethod
    def _from(tp: Any, mark: int, log: LogOffsets) -> int:
        if mark < log.earliest:  # retention deleted records the mark does not vouch for: gone for good
            logger.error("recovery: %s lost records %d..%d that the log no longer retains",
                         mark_field(tp), mark, log.earliest - 1)
            return log.earliest
        return mark

    async def _rebuild(self, starts: dict[Any, tuple[int, str]]) -> None:
        """Replay each partition from its start (the gate is closed and drained); again while
        the marks say that Redis lost data during the replay."""
        m = self._metrics
        while starts:
            for tp, (start, reason) in starts.items():
                m.rebuilds.labels(tp.topic, reason).inc()
                logger.warning("recovery: Redis lacks state of %s (%s): replaying from offset %d", mark_field(tp),
                               reason, start, extra={"partition": mark_field(tp), "reason": reason, "start": start})
            m.rebuilding.set(len(starts))
            began = time.monotonic()
            try:
                await self._marks.set({mark_field(tp): start for tp, (start, _) in starts.items()})
                ends = await self._log.replay({tp: start for tp, (start, _) in starts.items()}, self._apply)
                result = await self._marks.advance({mark_field(tp): (start, ends[tp])
                                                    for tp, (start, _) in starts.items()})
            finally:
                m.rebuilding.set(0)
            again: dict[Any, tuple[int, str]] = {}
            missing = []
            for tp, (start, _) in starts.items():
                value = result[mark_field(tp)]
                if value is None:
                    missing.append(tp)
                elif value < start:
                    again[tp] = (value, "rolled_back")
                else:
                    if tp in self._assigned:  # not revoked meanwhile
                        self._owned[tp] = _Owned(expected=value)
                    logger.warning("recovery: %s rebuilt from offset %d to %d in %.1fs", mark_field(tp), start,
                                   ends[tp], time.monotonic() - began,
                                   extra={"partition": mark_field(tp), "start": start, "end": ends[tp]})
            if missing:
                offsets = await self._log.offsets(missing)
                again.update({tp: (offsets[tp].earliest, "missing") for tp in missing})
            starts = again

    async def _apply(self, records: Sequence[Record]) -> int:
        by_topic: dict[str, list[Record]] = {}
        for rec in records:
            by_topic.setdefault(rec.topic, []).append(rec)
        applied = 0
        for topic, rows in by_topic.items():
            applied += await self._replayers[topic](rows)
        return applied

    async def _final_marks(self, tps: Collection[Any]) -> None:
        entries = {}
        for tp in tps:
            o = self._owned.pop(tp, None)
            if o is not None and o.written is not None and o.written + 1 > o.expected:
                entries[mark_field(tp)] = (o.expected, o.written + 1)
        if not entries:
            return
        try:
            await asyncio.wait_for(self._marks.advance(entries), self._final_timeout_s)
        except Exception:  # the next owner replays from the older mark: duplicates, nothing lost
            logger.warning("recovery marks not advanced at revocation/shutdown", exc_info=True)


class NoDeadLetters:
    """A replay's dead-letter sink: the records went to the DLQ when they first came."""

    async def send(self, record: Record, reason: str) -> None:
        return None

    async def flush(self) -> None:
        return None


def create_recovery(settings: Any, deps: Any, topics: Any, embeddings: Any, marks: RecoveryMarks) -> Recovery:
    """The worker's Recovery: replay processors on the worker's stores and model, their own
    (unexported) metrics, the log read from ``settings.kafka_bootstrap_servers``."""
    quiet = FeaturesMetrics(CollectorRegistry())  # replayed events are not fresh, duplicates are expected
    events = EventBatchProcessor(deps.users, deps.trending, embeddings, NoDeadLetters(), quiet)
    catalog = CatalogBatchProcessor(deps.catalog, NoDeadLetters(), quiet)
    log = KafkaPartitionLog(settings.kafka_bootstrap_servers, settings.app_id, settings.batch_size)
    recovery = Recovery(marks, log, {topics.events.get_topic_name(): events.process,
                                     topics.catalog.get_topic_name(): catalog.process},
                        deps.metrics, settings.recovery_check_interval_s, settings.shutdown_flush_s)
    recovery.watch_broker(settings.kafka_bootstrap_servers)
    return recovery
