"""faust's aiokafka transport with the consumer's fetch wait as a setting.

faust hard-codes ``fetch_max_wait_ms=1500`` for the worker's consumer. A broker
that answers a fetch only when that wait is over, instead of as soon as data
arrives (the embedded tansu broker does, measured: p50 366 ms from produce to
consume with 1500, 4 ms with 10), then holds every event for up to 1.5 s before
the worker even sees it: the whole freshness budget is 100 ms. With a short wait
an idle consumer only sends a small fetch request every few milliseconds.
"""
from __future__ import annotations

from faust.transport.drivers import aiokafka as faust_aiokafka


def transport_with_fetch_wait(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    """A faust Transport class whose worker consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport):
            consumer = super()._create_worker_consumer(transport)
            # Read by AIOKafkaConsumer.start() when it builds its Fetcher (not started yet here).
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self):
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        pass

    Transport.Consumer = Consumer
    return Transport
