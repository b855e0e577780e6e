"""One user's events keep their order only if every producer puts them on the same partition.
The project's producers (kafka-python) hash keys with murmur2; librdkafka-based producers
(confluent-kafka, kcat) use CRC32 (``consistent_random``) unless told otherwise. docs/events.md
tells third parties to set ``partitioner=murmur2_random``: here a confluent-kafka producer
configured that way lands every user on the partition the project's producer chose, on the
real (embedded) broker, and the librdkafka default does not."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from support.kafka import read_topic

from services.contract.producer import EventProducer

pytestmark = pytest.mark.integration

confluent_kafka = pytest.importorskip("confluent_kafka", reason="confluent-kafka not installed (the dev extra has it)")

EVENTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
PARTITIONS = 8
USERS = [f"u{n}" for n in range(1, 41)] + ["user-é", "a" * 100]


def _documented_partitioner() -> str:
    """The librdkafka partitioner docs/events.md prescribes (its kcat line's ``-X partitioner=``)."""
    found = set(re.findall(r"-X partitioner=(\w+)", EVENTS_DOC.read_text()))
    assert len(found) == 1, f"docs/events.md should name one partitioner for kcat, found {found}"
    return found.pop()


@pytest.fixture
def topic(kafka_bootstrap):
    name = f"partitioning-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        admin.close()
    return name


def _confluent(bootstrap: str, topic: str, source: str, **config) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, **config})
    failures = []
    for user in USERS:
        value = ('{"event_id":"%s","user_id":"%s","item_id":"1","type":"view"}' % (uuid.uuid4().hex, user)).encode()
        producer.produce(topic, key=user.encode(), value=value, headers=[("source", source.encode())],
                         on_delivery=lambda err, _msg: err and failures.append(err))
    assert producer.flush(30) == 0, "confluent-kafka did not deliver everything"
    assert not failures, failures


def test_a_documented_third_party_producer_lands_each_user_where_the_projects_producer_does(kafka_bootstrap, topic):
    partitioner = _documented_partitioner()
    assert partitioner == "murmur2_random"
    with EventProducer(kafka_bootstrap) as producer:
        for user in USERS:
            producer.send_raw(topic, user.encode(), b"{}", headers=[("source", b"project")])
    _confluent(kafka_bootstrap, topic, "documented", partitioner=partitioner)
    _confluent(kafka_bootstrap, topic, "librdkafka-default")  # consistent_random: CRC32 of the key

    where: dict[str, dict[str, int]] = {}
    for record in read_topic(kafka_bootstrap, topic, timeout=15.0):
        source = dict(record.headers)["source"].decode()
        where.setdefault(source, {})[record.key.decode()] = record.partition
    assert {s: len(users) for s, users in where.items()} == {
        "project": len(USERS), "documented": len(USERS), "librdkafka-default": len(USERS)}
    assert len(set(where["project"].values())) > PARTITIONS // 2  # the users do spread over the partitions

    assert where["documented"] == where["project"]
    moved = [u for u in USERS if where["librdkafka-default"][u] != where["project"][u]]
    assert moved, "librdkafka's default partitioner agreed on every user (the contrast the docs warn of)"
