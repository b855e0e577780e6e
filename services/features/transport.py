"""faust's aiokafka transport with the consumer's fetch wait as a setting.

faust hard-codes ``fetch_max_wait_ms=1500`` for the worker's consumer. A broker
that answers a fetch only when that wait is over, instead of as soon as data
arrives (the embedded tansu broker does, measured: p50 366 ms from produce to
consume with 1500, 4 ms with 10), then holds every event for up to 1.5 s before
the worker even sees it: the whole freshness budget is 100 ms. With a short wait
an idle consumer only sends a small fetch request every few milliseconds.

The consumer also hands records to the streams without faust's per-record
``wait_first``: faust wraps every record's delivery in a race against
"flow suspended", "stopped" and "crashed", i.e. four tasks and an
``asyncio.wait`` per record, measured at ~13 % of the worker's event loop at
6k events/s. Here the delivery coroutine runs inline first; only when it
really has to wait (flow control during a rebalance, a full stream buffer)
does it go through the same race as in faust. Delivery, offsets, gaps and
commits are otherwise faust's code path unchanged.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka


class _Continue(Awaitable[Any]):
    """A coroutine that already ran up to its first suspension, awaitable from there on.

    Forwards what it yielded (the future it waits on) to whoever awaits this,
    and sends/throws the results back in: what ``yield from`` does, for a
    coroutine started by hand.
    """

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self._coro, self._yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 -- cancellation included: the coroutine decides
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _drain_messages(self, fetcher) -> None:  # faust's Consumer._drain_messages, see the module doc
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspended = self.suspend_flow.is_set
    yield_every, num_since_yield = 100, 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = getmany(timeout=1.0)
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        coro = callback(message)
                        if suspended():
                            await self.wait_first(coro, self.suspend_flow.wait())
                        else:
                            try:
                                yielded = coro.send(None)  # the usual case: delivered without waiting
                            except StopIteration:
                                pass
                            else:  # it waits: race it as faust does
                                await self.wait_first(_Continue(coro, yielded), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception:
        self.log.exception("Drain messages raised")
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


def transport_with_fetch_wait(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    """A faust Transport class whose worker consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport):
            consumer = super()._create_worker_consumer(transport)
            # Read by AIOKafkaConsumer.start() when it builds its Fetcher (not started yet here).
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class Consumer(faust_aiokafka.Consumer):
        _drain_messages = _drain_messages

        def _new_consumer_thread(self):
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        pass

    Transport.Consumer = Consumer
    return Transport
