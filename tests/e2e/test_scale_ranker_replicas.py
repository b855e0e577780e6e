"""Three ranker replicas behind one gateway: round_robin spreads the calls, and when one
replica is SIGKILLed its share fails over without a storefront-visible error."""
from __future__ import annotations

import uuid

import pytest

import grpc
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.stack.embedded import free_port
from services.stack.local import DEV_GATEWAY_ENV
from services.stack.processes import ServiceProcess, grpc_serving, metric_value, metrics_text
from support.helpers import event, recommend, wait_for

# Starts its own processes (three rankers and a gateway) on top of the
# session fixtures, which train a model when this test runs first: slow on a loaded machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPLICAS = 3
CALLS = 60
RPC_COUNT = "shopstream_ranker_rpc_requests_total"


def _ranker_calls(metrics_port: int) -> float:
    text = metrics_text(metrics_port, names=(RPC_COUNT,))
    assert text is not None, f"ranker metrics on port {metrics_port} do not answer"
    return metric_value(text, RPC_COUNT) or 0.0


@pytest.fixture
def replicas(system, tmp_path):
    """Three `shopstream ranker` processes and a gateway whose ranker address lists all three."""
    base = {"KAFKA_BOOTSTRAP_SERVERS": system.kafka, "REDIS_URL": system.redis, **system.stack.extra_env}
    started: list[ServiceProcess] = []
    try:
        rankers = []
        for n in range(REPLICAS):
            port, metrics_port = free_port(), free_port()
            proc = ServiceProcess("ranker", {**base, "SHOPSTREAM_RANKER_ADDR": f"127.0.0.1:{port}",
                                             "SHOPSTREAM_RANKER_MODELS_DIR": str(system.stack.models_dir),
                                             "SHOPSTREAM_RANKER_METRICS_PORT": str(metrics_port)},
                                  tmp_path / f"ranker{n}").start()
            started.append(proc)
            rankers.append((proc, port, metrics_port))
        for proc, port, _ in rankers:
            proc.wait_until(lambda port=port: grpc_serving(f"127.0.0.1:{port}"), 90.0, "SERVING")
        gateway_addr = f"127.0.0.1:{free_port()}"
        started.append(ServiceProcess("gateway", {
            **base, **DEV_GATEWAY_ENV,
            "SHOPSTREAM_GATEWAY_ADDR": gateway_addr,
            # A bare address list; the gateway makes it an ipv4: target under round_robin.
            "SHOPSTREAM_GATEWAY_RANKER_ADDR": ",".join(f"127.0.0.1:{port}" for _, port, _ in rankers),
            "SHOPSTREAM_GATEWAY_METRICS_PORT": str(free_port()),
        }, tmp_path / "gateway").start())
        started[-1].wait_until(lambda: grpc_serving(gateway_addr), 60.0, "SERVING")
        with grpc.insecure_channel(gateway_addr) as channel:
            yield rankers, gateway_pb2_grpc.GatewayServiceStub(channel)
    finally:
        for proc in reversed(started):
            proc.stop()


def test_round_robin_spreads_and_fails_over(system, producer, catalog_items, replicas):
    rankers, gateway = replicas
    users = [f"rr-{uuid.uuid4().hex[:8]}-{n}" for n in range(4)]
    producer.send_events([event(u, catalog_items[(3 * n + i) % len(catalog_items)], "CLICK")
                          for n, u in enumerate(users) for i in range(3)], wait=True)
    # Every subchannel connects before the spread is measured (round_robin picks READY ones).
    wait_for(lambda: all(recommend(gateway, u).strategy == gateway_pb2.STRATEGY_PERSONALIZED for u in users),
             timeout=15.0, what="personalized answers through the replicas")
    wait_for(lambda: all(_ranker_calls(mp) > 0 for _, _, mp in rankers), timeout=10.0,
             what="every replica served a call")

    before = [_ranker_calls(mp) for _, _, mp in rankers]
    answers = [recommend(gateway, users[n % len(users)]) for n in range(CALLS)]
    assert all(a.strategy == gateway_pb2.STRATEGY_PERSONALIZED and not a.degraded for a in answers)
    spread = [_ranker_calls(mp) - b for (_, _, mp), b in zip(rankers, before)]
    print(f"calls per replica over {CALLS} Recommend calls: {spread}")
    assert sum(spread) == CALLS  # one Rank(Batch) call per sequential Recommend
    assert min(spread) >= CALLS / REPLICAS / 2, spread  # roughly even (exactly even under round_robin)

    killed, _, _ = rankers[0]
    killed.proc.kill()  # SIGKILL: no graceful NOT_SERVING, connections just break
    killed.proc.wait()
    survivors = rankers[1:]
    before = [_ranker_calls(mp) for _, _, mp in survivors]
    answers = [recommend(gateway, users[n % len(users)]) for n in range(CALLS)]
    bad = [(a.strategy, a.degraded_reason) for a in answers
           if a.strategy != gateway_pb2.STRATEGY_PERSONALIZED or a.degraded]
    assert not bad, f"{len(bad)} of {CALLS} answers not personalized after the SIGKILL: {bad[:5]}"
    after = [_ranker_calls(mp) - b for (_, _, mp), b in zip(survivors, before)]
    print(f"calls per surviving replica over {CALLS} Recommend calls: {after}")
    assert sum(after) >= CALLS
    assert min(after) >= CALLS / (REPLICAS - 1) / 2, after
