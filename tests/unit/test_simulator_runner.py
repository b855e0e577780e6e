"""The simulator's driver against a gRPC GatewayService of the test's own (a real grpc.aio
server on port 0): what the shoppers log is exactly what the server served and received."""
from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import pytest
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.ingest.synthetic import SyntheticConfig, generate
from services.simulator.journal import Journal, read_journal, summarize
from services.simulator.runner import Simulation, SimulationConfig


class RecordingGateway(gateway_pb2_grpc.GatewayServiceServicer):
    """Serves the first k catalog items (variant "a") or the last k (variant "b") by user parity."""

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.served: dict[str, tuple[str, list[str]]] = {}
        self.events = []

    async def Recommend(self, request, context):
        variant = "a" if int(request.user_id[1:]) % 2 else "b"
        items = self.items[:request.k] if variant == "a" else self.items[-request.k:]
        rid = uuid.uuid4().hex
        self.served[rid] = (variant, items)
        return gateway_pb2.RecommendResponse(
            items=[gateway_pb2.RecommendedItem(item_id=i) for i in items], recommendation_id=rid,
            variant=variant, experiment="exp", strategy=gateway_pb2.STRATEGY_PERSONALIZED)

    async def TrackEvents(self, request, context):
        self.events.extend(request.events)
        return gateway_pb2.TrackEventsResponse(accepted=len(request.events))


@pytest.fixture
async def gateway():
    ds = generate(SyntheticConfig(users=40, items=60, categories=4, seed=3))
    servicer = RecordingGateway([it["item_id"] for it in ds.catalog])
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield ds, servicer, f"127.0.0.1:{port}"
    await server.stop(None)


async def test_the_log_is_what_the_gateway_served_and_received(gateway, tmp_path):
    ds, servicer, addr = gateway
    cfg = SimulationConfig(shoppers=12, duration_s=0, lists_per_shopper=15, seed=4, think_s=0.0,
                           session_gap_s=0.0, drift_after_sessions=2)
    log = tmp_path / "sim.jsonl"
    with Journal(log) as journal:
        summary = await Simulation(addr, ds, cfg, journal).run()
    records = list(read_journal(log))
    assert summarize(records).as_dict() == summary.as_dict()
    assert summary.lists == 12 * 15 == len(servicer.served)
    assert summary.events == len(servicer.events) > 0
    for ev in servicer.events:  # every event names a served list and the position of its item
        variant, items = servicer.served[ev.recommendation_id]
        assert items[ev.position] == ev.item_id
    lists = [r for r in records if r["kind"] == "list"]
    assert {r["recommendation_id"]: r["variant"] for r in lists} == {k: v for k, (v, _) in servicer.served.items()}
    assert any(r["drifted"] for r in lists) and not all(r["drifted"] for r in lists)
    assert set(summary.variants) == {"a", "b"}
    assert summary.variants["a"].clicks + summary.variants["b"].clicks == sum(
        ev.type == 2 for ev in servicer.events)
    assert len({ev.event_id for ev in servicer.events}) == len(servicer.events)


async def test_same_seed_same_shoppers_and_decisions(gateway):
    ds, _, addr = gateway
    cfg = SimulationConfig(shoppers=6, duration_s=0, lists_per_shopper=8, seed=9, think_s=0.0, session_gap_s=0.0)
    runs = []
    for _ in range(2):
        journal = Journal(None)
        await Simulation(addr, ds, cfg, journal).run()
        runs.append(sorted((r["user_id"], r["session_id"].rsplit("-", 1)[1], tuple(r["items"]))
                           for r in journal.records if r["kind"] == "list"))
        runs.append(sorted((r["user_id"], r["item_id"], r["type"], r["position"])
                           for r in journal.records if r["kind"] == "event"))
    assert runs[0] == runs[2] and runs[1] == runs[3]


async def test_stop_from_another_thread(gateway):
    ds, _, addr = gateway
    cfg = SimulationConfig(shoppers=4, duration_s=300, seed=1, think_s=0.01, session_gap_s=0.01)
    sim = Simulation(addr, ds, cfg, Journal(None)).start_in_thread()
    while sim.summary().lists < 20:
        await asyncio.sleep(0.02)
    sim.stop()
    summary = await asyncio.to_thread(sim.join, 30)
    assert summary.lists >= 20


async def test_the_command_writes_its_log_and_summary(gateway, tmp_path, capsys):
    from services.simulator.cli import main

    ds, servicer, addr = gateway
    log = tmp_path / "sim.jsonl"
    argv = ["--gateway", addr, "--shoppers", "5", "--duration", "0", "--lists-per-shopper", "4", "--think", "0",
            "--session-gap", "0", "--log", str(log), "--synthetic-users", "40", "--synthetic-items", "60",
            "--synthetic-categories", "4", "--synthetic-seed", "3"]
    assert await asyncio.to_thread(main, argv) == 0
    summary = json.loads(log.with_name("sim.jsonl.summary.json").read_text())
    assert summary["lists"] == 20 == len(servicer.served)
    assert summary["events"] == len(servicer.events)
    assert "true CTR" in capsys.readouterr().out
