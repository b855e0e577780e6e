"""Producers outlive a broker restart (SIGKILL of the embedded broker, which keeps nothing).

While the broker is down every send fails within the producer's timeout instead of hanging;
once it is back on the same port the same producer object publishes again, on a fresh
kafka-python producer, and the topics it used exist again with their partition counts.
"""
import asyncio
import logging
import threading
import time
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from shopstream.events.v1 import events_pb2
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.contract import topics
from services.contract.producer import EventProducer, ensure_topics
from services.gateway.main import build, running
from services.gateway.settings import GatewaySettings
from services.ingest.replay import replay, to_events
from services.stack.embedded import free_port
from support.helpers import wait_for
from support.kafka import read_topic

pytestmark = pytest.mark.integration

TIMEOUT_S = 1.0
# What a loaded machine may add to a call that gives up on time; a hang is kafka-python's
# own 30-120 s.
SLACK_S = 2.0


def event(user: str, n: int) -> events_pb2.Event:
    return events_pb2.Event(event_id=f"{user}-{n}", user_id=user, item_id=f"i{n}", type=events_pb2.EVENT_TYPE_VIEW,
                            occurred_at=Timestamp(seconds=1_700_000_000 + n))


def partition_counts(bootstrap: str) -> dict[str, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(admin.list_topics())}
    finally:
        admin.close()


def fails_on_time(send) -> None:
    started = time.monotonic()
    with pytest.raises((KafkaError, ConnectionError)):
        send()
    assert time.monotonic() - started < TIMEOUT_S + SLACK_S


def old_producers_closed() -> None:
    """Waits until the producers dropped during the outage are closed (they close in the
    background): one still retrying could reach the restarted broker first and have it
    create the topic with its own default count, which the tests below check is not used."""
    wait_for(lambda: not any(t.name == "shopstream-producer-close" for t in threading.enumerate()), timeout=20.0)


def event_ids(bootstrap: str) -> list[str]:
    return [events_pb2.Event.FromString(r.value).event_id for r in read_topic(bootstrap, topics.EVENTS)]


def test_event_producer_publishes_again_after_the_broker_restarts(restartable_kafka):
    broker = restartable_kafka
    ensure_topics(broker.bootstrap_servers, partitions=2)
    with EventProducer(broker.bootstrap_servers, timeout_s=TIMEOUT_S) as producer:
        assert producer.send_events([event("u", 1)]) == 1

        broker.kill()
        fails_on_time(lambda: producer.send_events([event("u", 2)]))  # its connection: no ack in time
        fails_on_time(lambda: producer.send_events([event("u", 3)]))  # a fresh one: no bootstrap in time

        old_producers_closed()
        broker.start()  # same port, nothing kept
        assert producer.send_events([event("u", 4)]) == 1  # the same object, no restart
        assert producer.send_raw(topics.EVENTS, b"u", event("u", 5).SerializeToString()).offset >= 0
    # created again as it was (2), not as the broker would create it on its own (4)
    assert partition_counts(broker.bootstrap_servers)[topics.EVENTS] == 2
    assert event_ids(broker.bootstrap_servers) == ["u-4", "u-5"]


def test_replay_rides_out_a_broker_restart(restartable_kafka, caplog):
    """The replay loop keeps going through the outage; the same producer delivers everything."""
    broker = restartable_kafka
    ensure_topics(broker.bootstrap_servers, partitions=2)
    sequences = {f"r{u}": [str(i) for i in range(5)] for u in range(20)}
    retried = threading.Event()

    class OnRetry(logging.Handler):
        def emit(self, record):
            if "trying again" in record.getMessage():
                retried.set()

    handler = OnRetry()
    logging.getLogger("services.ingest.replay").addHandler(handler)
    try:
        with EventProducer(broker.bootstrap_servers, timeout_s=TIMEOUT_S) as producer:
            replay(producer, sequences, batch_size=10)
            broker.kill()
            result = {}

            def replay_again():
                try:
                    result["sent"] = replay(producer, sequences, batch_size=10, max_outage_s=60)
                except Exception as exc:
                    result["error"] = exc

            worker = threading.Thread(target=replay_again)
            worker.start()
            assert retried.wait(30), "the replay never saw the outage"
            broker.start()
            worker.join(60)
            assert not worker.is_alive() and result == {"sent": 100}
    finally:
        logging.getLogger("services.ingest.replay").removeHandler(handler)
    ids = event_ids(broker.bootstrap_servers)
    assert set(ids) == {e.event_id for e in to_events(sequences)}  # every event of the second replay


def gateway_settings(redis_url: str, kafka: str) -> GatewaySettings:
    extra = {"auth": "disabled"} if "auth" in GatewaySettings.model_fields else {}
    return GatewaySettings(addr="127.0.0.1:0", ranker_addr=f"127.0.0.1:{free_port()}", redis_url=redis_url,
                           kafka_bootstrap_servers=kafka, kafka_timeout_s=TIMEOUT_S, grace_s=0.0, **extra)


async def test_gateway_track_events_fails_fast_then_recovers_without_a_restart(restartable_kafka, redis_url):
    broker = restartable_kafka
    await asyncio.to_thread(ensure_topics, broker.bootstrap_servers, 2)
    settings = gateway_settings(redis_url, broker.bootstrap_servers)
    user = f"g-{uuid.uuid4().hex[:6]}"
    async with running(settings, build(settings)) as gw, \
            grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)

        async def track(n: int):
            return await stub.TrackEvents(gateway_pb2.TrackEventsRequest(events=[event(user, n)]), timeout=30)

        assert (await track(1)).accepted == 1
        await asyncio.to_thread(broker.kill)
        for n in (2, 3):  # the gateway's producer, then a fresh one that cannot connect
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await track(n)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # its own bound, not the client's deadline
            assert time.monotonic() - started < TIMEOUT_S + SLACK_S

        await asyncio.to_thread(old_producers_closed)
        await asyncio.to_thread(broker.start)
        assert (await track(4)).accepted == 1  # the same gateway process
    assert (await asyncio.to_thread(partition_counts, broker.bootstrap_servers))[topics.EVENTS] == 2
    assert await asyncio.to_thread(event_ids, broker.bootstrap_servers) == [f"{user}-4"]
