"""``shopstream up --retrain-every``'s schedule against the running system: a round reads the
event log from Kafka, publishes a candidate the ranker loads and starts experiment
``retrain-1`` (live model vs candidate); with simulated shoppers on it, a later round's
promotion policy decides (recorded in its report, and a promotion makes the winner the live
default); stopping the schedule while a retrain is in flight ends that process and starts no
other. The tiny candidate of that test usually loses to the session's model; the second test
starts from a live model that learned nothing, so the candidate wins and the promotion branch
runs: the policy promotes it, LATEST names it, the ranker serves it as its default.

The schedule runs in this process, its ``run_until`` in a thread as ``shopstream up`` runs it
(the same object, the same commands, each step a ``python -m services`` process of its own),
against the e2e system fixture: a whole ``shopstream up`` has its own brokers and first model,
and traffic enough for a decision on top would take longer than this test may. ``shopstream
up`` calls ``stop`` on SIGTERM before it stops the services; the third test runs the whole
``shopstream up --retrain-every`` as a process and SIGTERMs it while its first retrain runs.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from shopstream.ranker.v1 import ranker_pb2, ranker_pb2_grpc

from services.common.bundle.files import latest_version
from services.common.bundle.registry import set_live
from services.common.infra import connect_redis
from services.experiments.cli import loaded_model_versions
from services.experiments.store import ExperimentStore
from services.ingest.replay import replay
from services.ingest.synthetic import SyntheticConfig, generate, write_dataset
from services.simulator.journal import Journal, summarize
from services.simulator.runner import Simulation, SimulationConfig
from services.stack.retrain_schedule import RetrainSchedule
from services.training.from_kafka import import_bundle
from support.helpers import wait_for
from support.procs import alive, children

pytestmark = pytest.mark.e2e

SHOPPERS = 40
EVERY_S = 1.0  # short: rounds follow each other; the test waits on what they do, never on the interval
# Tiny candidates: one epoch of a small model (the session's live model has 3 epochs, dim 32).
TRAIN_ARGS = ("--epochs", "1", "--dim", "16", "--threads", "1", "--parity-users", "20")
MIN_IMPRESSIONS = 20
# Low thresholds so that a few hundred lists decide: any difference counts (alpha near 1), and
# the fallback guardrail is off (a loaded machine's ranker deadlines serve trending fallbacks).
POLICY_ARGS = ("--min-impressions", str(MIN_IMPRESSIONS), "--alpha", "0.999", "--max-fallback-rate", "1")
ROUND_TIMEOUT_S = 120.0  # bounds only a hang reaches: a retrain on a loaded 2-core machine
UP_TIMEOUT_S = 180.0  # shopstream up's start-up (a one-epoch first model) and first round, ditto

# The promotion test. Its live model learned nothing: trained with learning rate 0, its weights
# are their seeded initialisation (offline HR@10 near chance), so its lists are about random to
# the shoppers. The candidate is trained from the Kafka log as the session's model was, and the
# policy is strict (alpha 0.01, 100 lists per variant): a win is a real difference, not noise,
# and the shoppers' ground truth (the simulator's expected CTR per variant) must agree with it.
POOR_TRAIN_ARGS = ("--epochs", "1", "--lr", "0", "--dim", "16", "--threads", "1", "--parity-users", "20",
                   "--no-progress")
CANDIDATE_TRAIN_ARGS = ("--epochs", "3", "--dim", "32", "--threads", "1", "--parity-users", "20")
WIN_MIN_IMPRESSIONS = 100
WIN_POLICY_ARGS = ("--min-impressions", str(WIN_MIN_IMPRESSIONS), "--alpha", "0.01", "--max-fallback-rate", "1")


def _store(redis_url: str, work):
    async def run():
        client = connect_redis(redis_url)
        try:
            return await work(ExperimentStore(client))
        finally:
            await client.aclose()
    return asyncio.run(run())


def _steps(kind: str, parent: int | None = None) -> dict[int, list[str]]:
    """The children of ``parent`` (default: this process) that are schedule steps of ``kind``
    (``retrain``, ``experiments``)."""
    found = children(os.getpid() if parent is None else parent)
    return {pid: argv for pid, argv in found.items() if argv[1:4] == ["-m", "services", kind]}


def _ranker_live(addr: str) -> str | None:
    """The version the ranker's ListModels marks live."""
    with grpc.insecure_channel(addr) as channel:
        reply = ranker_pb2_grpc.RankerServiceStub(channel).ListModels(ranker_pb2.ListModelsRequest(), timeout=5.0)
    return next((m.version for m in reply.models if m.live), None)


def _decision(schedule: RetrainSchedule, experiment: str, min_impressions: int = MIN_IMPRESSIONS) -> dict | None:
    """The policy's report on ``experiment`` once it decided with the minimum sample (a round
    that ran before the shoppers had filled it says so and does not count)."""
    try:
        report = json.loads(schedule.report_path(experiment).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not written yet, or being written
        return None
    decision = report.get("decision")
    if decision is None or decision["reason"].startswith(f"below {min_impressions} impressions"):
        return None
    return report


def _promoted(schedule: RetrainSchedule, experiment: str) -> dict | None:
    """The policy's report on ``experiment`` once it promoted a variant (a round whose test was
    not yet significant keeps the experiment running; a later round asks again)."""
    report = _decision(schedule, experiment, WIN_MIN_IMPRESSIONS)
    return report if report is not None and report["decision"]["promoted"] else None


def _rank_default(addr: str, user: str) -> ranker_pb2.RankResponse:
    """The ranker's answer for ``user`` from its default model (model_version "")."""
    with grpc.insecure_channel(addr) as channel:
        return ranker_pb2_grpc.RankerServiceStub(channel).Rank(
            ranker_pb2.RankRequest(user_id=user, k=10, model_version=""), timeout=5.0)


def _restore(system, live_before: str) -> None:
    """Later tests of the session expect the session's model live and no experiment running."""
    for experiment in _store(system.redis, lambda s: s.list()):
        if getattr(experiment, "running", False) and experiment.name.startswith("retrain-"):
            _store(system.redis, lambda s, name=experiment.name: s.promote(name, "control"))
    if latest_version(system.stack.models_dir) != live_before:
        set_live(system.stack.models_dir, live_before, keep_previous=True)


@pytest.mark.timeout(420)
def test_schedule_retrains_from_kafka_experiments_decides_and_stops(system, dataset, producer, tmp_path):
    models_dir = system.stack.models_dir
    live_before = latest_version(models_dir)
    shoppers = tuple(u for u, seq in dataset.sequences.items() if len(seq) >= 4)[:SHOPPERS]
    # The event log the schedule trains on (alone, this test has nothing else in Kafka).
    replay(producer, {u: dataset.sequences[u] for u in shoppers})

    said: list[str] = []
    schedule = RetrainSchedule(EVERY_S, system.kafka, system.redis, system.stack.ranker_addr, models_dir,
                               tmp_path / "logs" / "retrain.log", 1.0, said.append,
                               train_args=TRAIN_ARGS, policy_args=POLICY_ARGS, prefix="retrain")
    stop = threading.Event()
    thread = threading.Thread(target=schedule.run_until, args=(stop,), name="retrain-schedule", daemon=True)
    simulation: Simulation | None = None

    def console() -> str:
        return "\n".join(said)

    started = time.monotonic()
    thread.start()
    try:
        # 1. A round: the Kafka log -> a candidate the ranker holds -> experiment retrain-1.
        wait_for(lambda: "experiment retrain-1 started" in console() or "started no experiment" in console(),
                 timeout=ROUND_TIMEOUT_S, interval=0.2, what="the first round")
        assert "experiment retrain-1 started" in console(), \
            f"{console()}\n{schedule.log_path.read_text()[-3000:]}"
        experiment = _store(system.redis, lambda s: s.get("retrain-1"))
        assert experiment is not None and experiment.running
        versions = {v.name: v.model_version for v in experiment.variants}
        assert versions["control"] == live_before and versions["candidate"] not in ("", live_before), versions
        candidate = versions["candidate"]
        assert candidate in loaded_model_versions(system.stack.ranker_addr)  # the ranker's ListModels
        retrain_json = sorted((models_dir.parent / "retrain").glob("*/retrain.json"))[-1]
        read = json.loads(retrain_json.read_text())
        assert read["models"]["candidate"]["version"] == candidate and read["events"]["kept"] > 0
        print(f"\nround 1 after {time.monotonic() - started:.1f}s: candidate {candidate} vs live {live_before}, "
              f"{read['events']['kept']} events read from Kafka")

        # 2. Shoppers on the experiment until a round's policy decides on it.
        cfg = SimulationConfig(shoppers=SHOPPERS, users=shoppers, duration_s=0, seed=17, think_s=0.0,
                               session_gap_s=0.0, timeout_s=10.0, max_in_flight=4)
        simulation = Simulation(system.stack.gateway_addr, dataset, cfg, Journal(None)).start_in_thread()
        report = wait_for(lambda: _decision(schedule, "retrain-1"), timeout=ROUND_TIMEOUT_S, interval=0.2,
                          what="the promotion policy deciding retrain-1")
        simulation.stop()
        simulation.join(timeout=30)
        rows = {row["variant"]: row for row in report["variants"]}
        assert set(rows) == {"control", "candidate"}
        assert all(row["impressions"] >= MIN_IMPRESSIONS for row in rows.values()), rows
        promoted = report["decision"]["promoted"]
        print(f"decision after {time.monotonic() - started:.1f}s: {report['decision']}; impressions "
              f"{ {v: int(r['impressions']) for v, r in rows.items()} }, CTR "
              f"{ {v: r['ctr']['value'] for v, r in rows.items()} }")
        # The round's console line, said once the decision's process has exited.
        verdict = f"promoted {promoted}" if promoted else "kept running"
        wait_for(lambda: f"the promotion policy on retrain-1: {verdict}" in console(), timeout=30.0, interval=0.1,
                 what="the schedule's console line on the decision")

        # 3. Stopping (what `shopstream up` does on SIGTERM) while the retrain that follows the
        # decision is in flight; the decision's effect is checked after.
        in_flight = wait_for(lambda: _steps("retrain"), timeout=30.0, interval=0.05, what="the next retrain in flight")
        (pid, argv), = in_flight.items()
        lines = len(said)
        stopping = time.monotonic()
        schedule.stop(stop)
        thread.join(timeout=30)
        stopped_in = time.monotonic() - stopping
        assert not thread.is_alive(), "the schedule's thread still runs after stop"
        assert not alive(pid), f"retrain {argv} still runs after stop"
        assert not _steps("retrain") and not _steps("experiments"), children(os.getpid())
        assert said[lines:] == [], said[lines:]  # the round ended there: no line, no next step
        print(f"stopped with {argv[argv.index('--experiment') + 1]}'s retrain in flight in {stopped_in:.2f}s")

        # The decision's effect: a promotion makes the winner the live default.
        if promoted:
            winner = _store(system.redis, lambda s: s.default())
            assert (winner.experiment, winner.variant) == ("retrain-1", promoted)
            assert not _store(system.redis, lambda s: s.get("retrain-1")).running
            live_now = versions[promoted]
            assert latest_version(models_dir) == live_now  # LATEST names the winner
            wait_for(lambda: _ranker_live(system.stack.ranker_addr) == live_now, timeout=30.0, interval=0.2,
                     what=f"the ranker serving {live_now} as its live model")
        else:
            assert _store(system.redis, lambda s: s.get("retrain-1")).running
            assert latest_version(models_dir) == live_before
        print(f"whole test {time.monotonic() - started:.1f}s")
    finally:
        if simulation is not None:
            simulation.stop()
            simulation.join(timeout=30)
        schedule.stop(stop)
        thread.join(timeout=30)
        _restore(system, live_before)


@pytest.mark.timeout(300)
def test_schedule_promotes_a_winning_candidate_and_the_ranker_serves_it(system, dataset, producer, tmp_path):
    """The promotion branch: the live model learned nothing, the candidate retrained from the
    Kafka log is clearly better with the simulated shoppers, the policy promotes it, LATEST
    names it, the ranker's default answers come from it and the experiment has ended."""
    models_dir = system.stack.models_dir
    live_before = latest_version(models_dir)
    shoppers = tuple(u for u, seq in dataset.sequences.items() if len(seq) >= 4)[:SHOPPERS]
    started = time.monotonic()
    schedule: RetrainSchedule | None = None
    stop = threading.Event()
    thread: threading.Thread | None = None
    simulation: Simulation | None = None
    try:
        # 0. A live model that learned nothing, published and made live the way a promotion is
        # (set_live; the session's model stays loaded as a candidate).
        data = write_dataset(dataset, tmp_path / "data")
        subprocess.run([sys.executable, "-m", "services.training", "--data", str(data["sequences"]),
                        "--models-dir", str(tmp_path / "poor"), *POOR_TRAIN_ARGS], check=True, capture_output=True)
        poor = latest_version(tmp_path / "poor")
        import_bundle(tmp_path / "poor", poor, models_dir)
        set_live(models_dir, poor, keep_previous=True)
        wait_for(lambda: _ranker_live(system.stack.ranker_addr) == poor, timeout=30.0, interval=0.2,
                 what=f"the ranker serving the untrained {poor} as its live model")
        # The event log the candidate learns from: the whole generated history (stable event ids:
        # what earlier tests replayed is the same events, counted once downstream and by retrain).
        replay(producer, dataset.sequences)
        print(f"\nuntrained live model {poor} after {time.monotonic() - started:.1f}s")

        said: list[str] = []
        schedule = RetrainSchedule(EVERY_S, system.kafka, system.redis, system.stack.ranker_addr, models_dir,
                                   tmp_path / "logs" / "retrain.log", 1.0, said.append,
                                   train_args=CANDIDATE_TRAIN_ARGS, policy_args=WIN_POLICY_ARGS,
                                   prefix="retrain-win")
        name = "retrain-win-1"

        def console() -> str:
            return "\n".join(said)

        thread = threading.Thread(target=schedule.run_until, args=(stop,), name="retrain-schedule", daemon=True)
        thread.start()
        # 1. The first round: a candidate from the Kafka log, experiment untrained (control) vs candidate.
        wait_for(lambda: f"experiment {name} started" in console() or "started no experiment" in console(),
                 timeout=ROUND_TIMEOUT_S, interval=0.2, what="the first round")
        assert f"experiment {name} started" in console(), f"{console()}\n{schedule.log_path.read_text()[-3000:]}"
        versions = {v.name: v.model_version for v in _store(system.redis, lambda s: s.get(name)).variants}
        assert versions["control"] == poor and versions["candidate"] not in ("", poor), versions
        candidate = versions["candidate"]
        print(f"round 1 after {time.monotonic() - started:.1f}s: candidate {candidate}")

        # 2. Shoppers on the experiment until a round's policy promotes a variant.
        cfg = SimulationConfig(shoppers=SHOPPERS, users=shoppers, duration_s=0, seed=23, think_s=0.0,
                               session_gap_s=0.0, timeout_s=10.0, max_in_flight=4)
        journal = Journal(None)
        simulation = Simulation(system.stack.gateway_addr, dataset, cfg, journal).start_in_thread()
        report = wait_for(lambda: _promoted(schedule, name), timeout=ROUND_TIMEOUT_S, interval=0.2,
                          what=f"the promotion policy promoting a variant of {name}")
        simulation.stop()
        simulation.join(timeout=30)
        rows = {row["variant"]: row for row in report["variants"]}
        truth = summarize(r for r in journal.records if r.get("experiment") == name).variants
        print(f"decision after {time.monotonic() - started:.1f}s: {report['decision']}; impressions "
              f"{ {v: int(r['impressions']) for v, r in rows.items()} }, CTR "
              f"{ {v: round(r['ctr']['value'], 3) for v, r in rows.items()} }, the shoppers' true CTR "
              f"{ {v: round(t.expected_ctr, 3) for v, t in truth.items()} }")
        # The policy's report: the candidate won, on enough lists, significantly.
        assert report["decision"]["promoted"] == "candidate", report["decision"]
        assert set(rows) == {"control", "candidate"}
        assert all(row["impressions"] >= WIN_MIN_IMPRESSIONS for row in rows.values()), rows
        assert rows["candidate"]["ctr"]["value"] > rows["control"]["ctr"]["value"], rows
        test = rows["candidate"]["tests"]["ctr"]
        assert test["difference"] > 0 and test["p_value"] < 0.01, test
        # ... and the shoppers' ground truth agrees: the candidate's lists were the better ones.
        assert truth["candidate"].expected_ctr > truth["control"].expected_ctr, truth
        wait_for(lambda: f"the promotion policy on {name}: promoted candidate" in console(), timeout=30.0,
                 interval=0.1, what="the schedule's console line on the promotion")
        schedule.stop(stop)  # no further round: the state below is the promotion's alone
        thread.join(timeout=30)
        assert not thread.is_alive(), "the schedule's thread still runs after stop"

        # 3. The promotion's effect: the experiment has ended with the candidate as its winner ...
        ended = _store(system.redis, lambda s: s.get(name))
        assert not ended.running and ended.status == "ended" and ended.winner == "candidate", ended
        winner = _store(system.redis, lambda s: s.default())
        assert (winner.experiment, winner.variant, winner.model_version) == (name, "candidate", candidate), winner
        # ... LATEST names the candidate ...
        assert latest_version(models_dir) == candidate
        # ... and the ranker's default answers (model_version "") come from it.
        wait_for(lambda: _ranker_live(system.stack.ranker_addr) == candidate, timeout=30.0, interval=0.2,
                 what=f"the ranker serving {candidate} as its live model")
        answers = {u: _rank_default(system.stack.ranker_addr, u) for u in shoppers[:5]}
        assert {a.model_version for a in answers.values()} == {candidate}, \
            {u: a.model_version for u, a in answers.items()}
        assert all(a.user_known and len(a.items) == 10 for a in answers.values()), answers
        print(f"whole test {time.monotonic() - started:.1f}s")
    finally:
        if simulation is not None:
            simulation.stop()
            simulation.join(timeout=30)
        if schedule is not None:
            schedule.stop(stop)
        if thread is not None:
            thread.join(timeout=30)
        _restore(system, live_before)


@pytest.mark.timeout(300)
def test_up_with_retrain_every_stops_on_sigterm_with_a_retrain_in_flight(tmp_path):
    """The whole ``shopstream up --retrain-every`` as a process: SIGTERM while its schedule's
    retrain runs ends everything it started (exit 0, no process left behind)."""
    data = write_dataset(generate(SyntheticConfig(users=150, items=60, categories=4, seed=5)), tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}  # embedded
    with open(tmp_path / "console.txt", "w+", encoding="utf-8") as console:
        up = subprocess.Popen(
            [sys.executable, "-m", "services", "up", "--free-ports", "--workdir", str(tmp_path / "var"),
             "--dataset", str(data["sequences"]), "--attributes", str(data["attributes"]), "--users", "20",
             "--rate", "5000", "--no-prometheus", "--retrain-every", str(EVERY_S),
             "--train-args", " ".join(TRAIN_ARGS), "--retrain-policy-args", " ".join(POLICY_ARGS)],
            cwd=tmp_path, env=env, stdout=console, stderr=subprocess.STDOUT)
        try:
            in_flight = wait_for(lambda: _steps("retrain", up.pid) or up.poll() is not None,
                                 timeout=UP_TIMEOUT_S, interval=0.05, what="up's first retrain in flight")
            if up.poll() is not None:
                console.seek(0)
                pytest.fail(f"shopstream up exited ({up.returncode}) before its retrain:\n{console.read()[-3000:]}")
            started = children(up.pid)  # the services, the brokers and the retrain
            (retrain_pid, _), = in_flight.items()
            up.send_signal(signal.SIGTERM)
            code = up.wait(timeout=60)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
        console.seek(0)
        out = console.read()
    assert code == 0, out[-3000:]
    assert "==> retraining every" in out and "==> stopped" in out, out[-3000:]
    assert "==> retrain schedule:" not in out, out[-3000:]  # the round ended with the stop: nothing said of it
    assert not alive(retrain_pid), "the retrain outlived shopstream up"
    left = [argv for pid, argv in started.items() if alive(pid)]
    assert not left, f"left running after shopstream up exited: {left}"
