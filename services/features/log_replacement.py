"""A broker that comes back with a new log: notice it before anything of the new log is written.

The embedded broker (tansu, memory storage) comes back from a restart with empty topics
and no committed offsets, and it answers a fetch past the end of a partition with nothing
rather than ``OFFSET_OUT_OF_RANGE``; its group coordinator often accepts the running
worker's heartbeats, so often no rebalance happens. A running worker therefore keeps fetching
at its old positions and skips, per partition, as many events of the new log as it had read
from the old one (faust also drops any record below the offset it last read). When a
rebalance does follow, faust may drop a batch it fetched meanwhile with no committed offset
to seek back to: ``Recovery._find_dropped`` reads such a batch again.

What this module gives :class:`services.features.recovery.Recovery` to handle it:

- :class:`BrokerWatch`: an idle TCP connection to every bootstrap address. A Kafka broker
  never speaks first, so the connection ends only when the broker goes away (a crash, a
  restart, an idle timeout); then ``on_lost`` runs on the loop at once, long before a
  restarted broker can hand out records, and the recovery holds the agents' writes until it
  has checked the log (a broker that comes back with the same log costs one check).
- :class:`Fingerprint`: the last record this worker was handed per partition, taken at that
  moment; the check reads the broker's record at the same offset: a log that ends before it,
  or holds another record there, is a new log.
- :class:`DeliveryScreen`: after the consumer is sought back to a new log's beginning
  (faust's ``Consumer.seek_wait``), records fetched before the seek may still come out of the
  batch faust is iterating; handed on, they would move faust's read offset past the records
  the seek is to deliver again (faust drops records below it). The screen, in the worker
  consumer's ``getmany`` (``transport.py``), drops them until the first record of the new
  read, and tells the recovery which record that was.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)


class Fingerprint(NamedTuple):
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    @classmethod
    def of_message(cls, message: Any) -> "Fingerprint":
        """A faust ``Message`` (timestamp in seconds)."""
        return cls(message.offset, message.key, message.value, round(message.timestamp * 1000))

    @classmethod
    def of_record(cls, record: Any) -> "Fingerprint":
        """An aiokafka ``ConsumerRecord`` (timestamp in milliseconds)."""
        return cls(record.offset, record.key, record.value, int(record.timestamp))


def bootstrap_addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    out = []
    for entry in bootstrap_servers.split(","):
        entry = entry.strip().removeprefix("kafka://")
        if entry:
            host, _, port = entry.rpartition(":")
            out.append((host.strip("[]") or "localhost", int(port or 9092)))
    return out


class BrokerWatch:
    """Calls ``on_lost`` whenever an established connection to a bootstrap address closes."""

    def __init__(self, bootstrap_servers: str, on_lost: Callable[[], None], retry_s: float = 0.2) -> None:
        self._addresses = bootstrap_addresses(bootstrap_servers)
        self._on_lost = on_lost
        self._retry_s = retry_s

    async def run(self) -> None:
        await asyncio.gather(*(self._watch(host, port) for host, port in self._addresses))

    async def _watch(self, host: str, port: int) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:  # down: the next connection that closes tells
                await asyncio.sleep(self._retry_s)
                continue
            try:
                await reader.read(1)  # nothing ever comes: returns (or raises) when the connection ends
            except OSError:
                pass
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            logger.warning("broker connection to %s:%d lost: the log is checked before the next write", host,
                           port)
            self._on_lost()
            await asyncio.sleep(self._retry_s)


class DeliveryScreen:
    """Which records the worker consumer hands on, per partition being read again.

    ``start(tp, last_old)`` before seeking ``tp`` back: until a record at or below
    ``last_old`` (the last offset handed out of the replaced log) comes, records of ``tp``
    are ones fetched before the seek and are dropped; that first one is ``first_new(tp)``
    (held weakly: faust waits at a rebalance for every message it handed out to be acked or
    gone)."""

    def __init__(self) -> None:
        self._pending: dict[Any, int] = {}
        self._first_new: dict[Any, weakref.ref] = {}

    def start(self, tp: Any, last_old: int) -> None:
        self._pending[tp] = last_old
        self._first_new.pop(tp, None)

    def admit(self, tp: Any, message: Any) -> bool:
        """Called by the consumer for every record it fetched, before faust sees it."""
        if not self._pending:
            return True
        last_old = self._pending.get(tp)
        if last_old is None:
            return True
        if message.offset > last_old:
            return False
        del self._pending[tp]
        self._first_new[tp] = weakref.ref(message)
        return True

    def first_new(self, tp: Any) -> Any:
        ref = self._first_new.get(tp)
        return ref() if ref is not None else None

    def done(self, tp: Any) -> None:
        self._first_new.pop(tp, None)

    def clear(self) -> None:
        """A rebalance: faust seeks every partition itself."""
        self._pending.clear()
        self._first_new.clear()
