"""The whole system for the end-to-end tests: real broker, real Redis, a model
trained by the project on synthetic data, and each service in its own process."""
from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass

import grpc
import pytest
import redis

from shopstream.gateway.v1 import gateway_pb2_grpc

from services.common.bundle.files import latest_version
from services.common.stores import keys
from services.ingest.catalog import catalog_from_docs
from services.contract.producer import EventProducer, ensure_topics
from services.ingest.synthetic import SyntheticConfig, generate, write_dataset
from services.stack.local import ServiceStack
from services.stack.processes import metric_value, metrics_text
from support.helpers import wait_for

E2E_ENV = {
    "SHOPSTREAM_FEATURES_TRENDING_DECAY_INTERVAL_S": "3600",  # no decay mid-test: states compare exactly
    "SHOPSTREAM_FEATURES_MODEL_RELOAD_INTERVAL_S": "1",
    "SHOPSTREAM_RANKER_RELOAD_INTERVAL_S": "1",
    "SHOPSTREAM_RANKER_EXECUTOR_THREADS": "2",
}


@dataclass
class System:
    kafka: str
    redis: str
    stack: ServiceStack
    gateway: gateway_pb2_grpc.GatewayServiceStub
    model_version: str

    def features_metric(self, name: str) -> float:
        text = metrics_text(self.stack.ports["features_metrics"])
        return (metric_value(text, name) or 0.0) if text else 0.0


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    return generate(SyntheticConfig(users=400, items=120, categories=6, seed=11))


@pytest.fixture(scope="session")
def catalog_items(dataset) -> list[str]:
    return [item["item_id"] for item in dataset.catalog]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, dataset):
    out = tmp_path_factory.mktemp("e2e")
    paths = write_dataset(dataset, out / "data")
    models = out / "models"
    subprocess.run(
        [sys.executable, "-m", "services.training", "--data", str(paths["sequences"]), "--models-dir", str(models),
         "--epochs", "3", "--dim", "32", "--threads", "1", "--parity-users", "50"],
        check=True, capture_output=True,
    )
    assert latest_version(models) is not None
    return models


@pytest.fixture(scope="session")
def producer(kafka_bootstrap):
    with EventProducer(kafka_bootstrap) as p:
        yield p


@pytest.fixture(scope="session")
def system(kafka_bootstrap, redis_url, models_dir, dataset, producer, tmp_path_factory):
    redis.Redis.from_url(redis_url).flushdb()
    ensure_topics(kafka_bootstrap, partitions=4)
    # A consumer group of its own: earlier tests' workers must not share its partitions.
    env = {**E2E_ENV, "SHOPSTREAM_FEATURES_APP_ID": f"shopstream-features-e2e-{uuid.uuid4().hex[:6]}"}
    stack = ServiceStack(kafka_bootstrap, redis_url, models_dir, tmp_path_factory.mktemp("logs"),
                         partitions=4, extra_env=env)
    try:
        stack.start_service("features")
        producer.send_catalog(catalog_from_docs(dataset.catalog))
        client = redis.Redis.from_url(redis_url)
        ids = [item["item_id"] for item in dataset.catalog]
        wait_for(lambda: all(client.hmget(keys.CATALOG_ITEMS, ids)), timeout=20.0, interval=0.1)
        stack.start_service("ranker")
        stack.start_service("gateway")
        with grpc.insecure_channel(stack.gateway_addr) as channel:
            yield System(kafka_bootstrap, redis_url, stack, gateway_pb2_grpc.GatewayServiceStub(channel),
                         latest_version(models_dir))
    finally:
        stack.stop()
