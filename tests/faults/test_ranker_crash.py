"""The ranker killed (SIGKILL) under Recommend load: the gateway answers every call, degraded
to trending while the ranker is gone (the documented ``degraded`` flag and reason, no error),
and personalized again once the ranker is back."""
from __future__ import annotations

import threading
import time

import grpc
import pytest
from shopstream.catalog.v1 import catalog_pb2
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from faults.harness import CATALOG, Publisher, all_applied, wait_until
from services.common.stores import keys
from services.contract.producer import EventProducer

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


class Load:
    """Recommend calls from ``threads`` threads until stopped; every answer or error kept."""

    def __init__(self, addr: str, users: list[str], threads: int = 4) -> None:
        self.answers: list[tuple[float, gateway_pb2.RecommendResponse]] = []
        self.errors: list[grpc.RpcError] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(addr)
        stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._threads = [threading.Thread(target=self._run, args=(stub, users[i::threads]), daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, stub, users) -> None:
        n = 0
        while not self._stop.is_set():
            user = users[n % len(users)]
            n += 1
            try:
                resp = stub.Recommend(gateway_pb2.RecommendRequest(user_id=user, k=5), timeout=2.0)
                with self._lock:
                    self.answers.append((time.monotonic(), resp))
            except grpc.RpcError as err:
                with self._lock:
                    self.errors.append(err)

    def since(self, t: float) -> list[gateway_pb2.RecommendResponse]:
        with self._lock:
            return [resp for at, resp in self.answers if at >= t]

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self._channel.close()


def test_ranker_sigkill_under_load_degrades_to_trending_then_recovers(rig):
    with EventProducer(rig.kafka.bootstrap_servers) as producer:
        producer.send_catalog([catalog_pb2.CatalogItem(item_id=item, title=item, category="c", price=1.0,
                                                       in_stock=True) for item in CATALOG])
    wait_until(lambda: all(rig.client.hmget(keys.CATALOG_ITEMS, CATALOG)), 30, "the catalog applied")
    users = [f"shopper-{n}" for n in range(8)]
    publisher = Publisher(rig.kafka.bootstrap_servers, users)
    sent = []
    for n in range(40):  # histories (and trending) over catalog items
        ev = publisher.event()
        ev = type(ev)(ev.event_id, ev.user_id, CATALOG[n % len(CATALOG)], ev.type_code)
        publisher.send(ev)
        sent.append(ev)
    publisher.flush()
    wait_until(lambda: all_applied(rig.client, sent), 30, "the histories applied")
    rig.stack.start_service("ranker")
    rig.stack.start_service("gateway")

    load = Load(rig.stack.gateway_addr, users)
    try:
        start = time.monotonic()
        wait_until(lambda: sum(r.strategy == gateway_pb2.STRATEGY_PERSONALIZED for r in load.since(start)) >= 20,
                   30, "personalized answers under load")
        ranker = rig.stack.processes.pop("ranker")
        ranker.proc.kill()
        ranker.proc.wait()
        killed = time.monotonic()
        wait_until(lambda: sum(r.degraded for r in load.since(killed)) >= 50, 30, "degraded answers")
        rig.stack.start_service("ranker")
        back = time.monotonic()
        wait_until(lambda: sum(not r.degraded for r in load.since(back)) >= 20, 60, "personalized answers again")
    finally:
        load.stop()
    assert load.errors == []  # the storefront saw no error at all
    degraded = [r for _, r in load.answers if r.degraded]
    assert degraded and all(r.strategy == gateway_pb2.STRATEGY_TRENDING and r.degraded_reason and len(r.items) == 5
                            for r in degraded)
    last = load.since(back)[-10:]
    assert all(r.strategy == gateway_pb2.STRATEGY_PERSONALIZED and not r.degraded for r in last)
    print(f"ranker SIGKILL under load: {len(load.answers)} answers, {len(degraded)} degraded to trending, "
          f"0 errors")
