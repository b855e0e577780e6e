"""faust's aiokafka transport with the worker consumer's fetch wait as a setting.

faust 0.15 builds the worker's ``AIOKafkaConsumer`` with ``fetch_max_wait_ms=1500``
hard-coded, and no app setting reaches it. A broker that answers a fetch only
when that wait is over, instead of as soon as data arrives (the embedded tansu
broker does), then holds every event for up to 1.5 s before the worker even
sees it, against a freshness budget of 100 ms (docs/performance.md). With a
short wait an idle consumer only sends a small fetch request every few
milliseconds.

How it is set, the least private way found:

- faust's documented extension point for transports is the class behind the
  broker URL's scheme (``faust.transport.by_url``, extensible through the
  ``faust.transports`` setuptools entry point), and ``App.transport`` is a public,
  settable property of ``AppT``. The app installs :class:`FetchWaitTransport`
  through that property (``app.transport = ...``, see ``app.create_app``), so
  there is no App subclass, no global registry entry and no packaging step (the
  producer it makes is faust's own class). Registering the class under a URL
  scheme instead would change only how it is found, not the overrides below.
- A transport chooses its consumer through the ``Transport.Consumer`` class
  attribute (public). Two of faust's factory methods for the aiokafka client are
  overridden, both underscored but neither copied: the consumer's
  ``_new_consumer_thread`` returns the thread subclass, whose
  ``_create_worker_consumer`` calls faust's own and changes only the fetch wait
  on the client it returns, before the client starts (aiokafka reads its
  ``_fetch_max_wait_ms`` when ``start()`` builds the fetcher; the client has no
  public setter). Every other consumer option, delivery, acks and commits stay
  faust's.
- No public alternative was found: no faust setting reaches the value (faust
  0.15.3's settings list has none), aiokafka takes it only as a constructor
  argument, and the broker cannot be told to answer early.

tests/unit/features/test_transport.py pins both ends: faust's own transport
still builds the consumer with 1500 ms (when that test fails, faust has changed
and this module may be unnecessary) and this one builds it with the setting.
"""
from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        # Not started yet: AIOKafkaConsumer.start() passes this to its Fetcher.
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self):
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float):
        """faust's (public) ``Consumer.getmany``, through the transport's ``delivery_screen``
        when it has one: records fetched before a rewind to a new log's beginning are dropped
        before faust reads them (see log_replacement.DeliveryScreen)."""
        screen = self.transport.delivery_screen
        async for tp, message in super().getmany(timeout):
            if screen is None or screen.admit(tp, message):
                yield tp, message


class FetchWaitTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport whose worker consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    Consumer = _Consumer

    def __init__(self, url: Any, app: Any, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(url, app, *args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.delivery_screen: Any = None  # set by the recovery (log_replacement.DeliveryScreen)
