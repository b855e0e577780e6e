"""``shopstream loop``: the whole closed loop on one machine, measured by the shoppers' oracle.

1. Infrastructure (KAFKA_BOOTSTRAP_SERVERS / REDIS_URL, else the embedded broker and Redis),
   a synthetic shop, a model trained on its generated history (the part of the simulated
   history before the drift), that history replayed through Kafka, and the services.
2. Simulated shoppers with the generator's tastes shop through the gateway; ``--warmup``
   seconds in, their tastes drift (each preferred category rotates to another).
3. ``--collect`` seconds after the drift, ``shopstream retrain`` reads the event log from
   Kafka (everything retained, or the last ``--retrain-window`` seconds), trains a candidate,
   publishes it beside the live model and starts an experiment control (live) vs candidate.
4. The promotion policy (services/experiments/policy.py) reads the experiment's report every
   ``--report-every`` seconds and promotes the winner once both variants have
   ``--min-impressions`` lists and the difference in CTR is significant with no guardrail
   broken; when ``--experiment-max`` passes first, the control stays live (no winner).
5. The shoppers go on for ``--after`` seconds under the promoted model, then everything stops.

Results (``--results``): ``loop.json`` (timeline, versions, decision, per-phase CTR measured
and true, the attribution check against the shoppers' log), ``report.json`` and
``experiment.png`` (the experiment report and its chart), ``retrain.json``,
``ctr_over_time.png`` (CTR per served model over the whole run, the drift, the experiment
and the promotion marked), ``shoppers.summary.json`` and ``command.txt``.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shopstream.gateway.v1 import gateway_pb2

from services.common.infra import connect_redis, redacted
from services.common.logs import configure_logging
from services.contract.producer import EventProducer, ensure_topics
from services.ingest.catalog import catalog_from_docs
from services.ingest.replay import replay
from services.ingest.synthetic import SyntheticConfig, generate, write_dataset
from services.simulator.chart import write_loop_chart
from services.simulator.journal import Journal, ctr_over_time, summarize
from services.simulator.runner import Simulation, SimulationConfig
from services.stack.client import fetch
from services.stack.local import ServiceStack, infrastructure

logger = logging.getLogger(__name__)

CONTROL, CANDIDATE = "control", "candidate"


@dataclass
class LoopConfig:
    workdir: Path = Path("var/loop")
    results: Path = Path("var/loop/results")
    users: int = 600
    items: int = 300
    categories: int = 12
    seed: int = 7
    shoppers: int = 60
    think_s: float = 0.5
    max_in_flight: int = 8  # calls to the gateway at once (the services share the machine)
    session_gap_s: float = 1.0
    warmup_s: float = 60.0  # before the drift
    collect_s: float = 60.0  # after the drift, before retraining
    retrain_window_s: float | None = None  # retrain on the last this many seconds of the log (None: all)
    experiment_max_s: float = 240.0
    after_s: float = 45.0  # after the promotion
    report_every_s: float = 10.0
    min_impressions: int = 400
    alpha: float = 0.05
    bucket_s: float = 10.0
    # Small and quick: the loop shares the machine with the services and the shoppers.
    train_args: list[str] = field(default_factory=lambda: [
        "--epochs", "12", "--dim", "32", "--blocks", "1", "--max-len", "20", "--batch-size", "128",
        "--patience", "4", "--max-minutes", "4", "--parity-users", "100"])
    experiment: str = "retrained"


def _parser() -> argparse.ArgumentParser:
    d = LoopConfig()
    p = argparse.ArgumentParser(prog="shopstream loop", description=__doc__.splitlines()[0],
                                epilog="Options after `--` are handed to `shopstream train` for both models "
                                       f"(default: {' '.join(d.train_args)}).")
    p.add_argument("--workdir", type=Path, default=d.workdir, help="models, data, logs, the shoppers' log")
    p.add_argument("--results", type=Path, default=None, help="where the results go (default: <workdir>/results)")
    p.add_argument("--users", type=int, default=d.users, help="users of the synthetic shop")
    p.add_argument("--items", type=int, default=d.items)
    p.add_argument("--categories", type=int, default=d.categories)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--shoppers", type=int, default=d.shoppers, help="simulated shoppers (a sample of the users)")
    p.add_argument("--think", type=float, default=d.think_s, help="mean seconds between two lists of a session")
    p.add_argument("--session-gap", type=float, default=d.session_gap_s)
    p.add_argument("--max-in-flight", type=int, default=d.max_in_flight, help="calls to the gateway at once")
    p.add_argument("--warmup", type=float, default=d.warmup_s, help="seconds of shopping before the drift")
    p.add_argument("--collect", type=float, default=d.collect_s, help="seconds after the drift before retraining")
    p.add_argument("--retrain-window", type=float, default=None,
                   help="retrain on the last this many seconds of the event log (default: everything retained)")
    p.add_argument("--experiment-max", type=float, default=d.experiment_max_s,
                   help="seconds the experiment may run without a decision")
    p.add_argument("--after", type=float, default=d.after_s, help="seconds of shopping after the promotion")
    p.add_argument("--report-every", type=float, default=d.report_every_s)
    p.add_argument("--min-impressions", type=int, default=d.min_impressions, help="per variant, before deciding")
    p.add_argument("--alpha", type=float, default=d.alpha)
    p.add_argument("--bucket", type=float, default=d.bucket_s, help="seconds per point of the CTR chart")
    p.add_argument("--experiment", default=d.experiment, help="the experiment's name")
    p.add_argument("--log-level", default="WARNING")
    return p


def _say(text: str) -> None:
    print(f"==> {text}", flush=True)


def _train_initial(data: dict[str, Path], models_dir: Path, train_args: list[str], log_dir: Path) -> None:
    cmd = [sys.executable, "-m", "services.training", "--data", str(data["sequences"]),
           "--attributes", str(data["attributes"]), "--models-dir", str(models_dir), *train_args]
    with open(log_dir / "train-initial.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)


def _retrain(cfg: LoopConfig, kafka: str, redis: str, stack: ServiceStack, models_dir: Path, out: Path) -> dict:
    """``shopstream retrain --experiment`` as its own process (training would take the
    simulator's CPU time in this one); returns its retrain.json."""
    cmd = [sys.executable, "-m", "services.cli", "retrain", "--kafka", kafka, "--models-dir", str(models_dir),
           "--out", str(out), "--experiment", cfg.experiment, "--redis", redis, "--ranker", stack.ranker_addr,
           "--log-level", "WARNING", *cfg.train_args]
    if cfg.retrain_window_s:
        cmd[4:4] = ["--since", f"{cfg.retrain_window_s:g}s"]
    with open(cfg.workdir / "logs" / "retrain.log", "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"shopstream retrain failed (exit {code}); see {cfg.workdir / 'logs' / 'retrain.log'}")
    return json.loads((out / "retrain.json").read_text(encoding="utf-8"))


async def _with_redis(redis_url: str, work):
    client = connect_redis(redis_url)
    try:
        return await work(client)
    finally:
        await client.aclose()


def _report(redis_url: str, name: str, gateway_metrics: str | None) -> dict:
    from services.experiments.report import load_report

    return asyncio.run(_with_redis(redis_url, lambda r: load_report(
        r, name, control=CONTROL, declared=[CONTROL, CANDIDATE], gateway_metrics_url=gateway_metrics)))


def _decide(redis_url: str, report: dict, models_dir: Path, policy):
    """The policy's decision on this report; a winner is promoted (made live at the ranker)."""
    from services.experiments.cli import promote
    from services.experiments.policy import apply_policy
    from services.experiments.store import ExperimentStore

    async def work(client):
        store = ExperimentStore(client)
        return await apply_policy(store, report, policy,
                                  promote=lambda name, variant: promote(store, name, variant, models_dir))
    return asyncio.run(_with_redis(redis_url, work))


def _end_without_winner(redis_url: str, name: str, models_dir: Path) -> None:
    """The control stays live: promoting it ends the experiment and changes nothing served."""
    from services.experiments.cli import promote
    from services.experiments.store import ExperimentStore

    asyncio.run(_with_redis(redis_url, lambda r: promote(ExperimentStore(r), name, CONTROL, models_dir)))


def _phase_summaries(records: list[dict], phases: dict[str, tuple[float, float]]) -> dict:
    out = {}
    for phase, (start, end) in phases.items():
        lists = {r["recommendation_id"] for r in records if r["kind"] == "list" and start <= r["t"] < end}
        part = [r for r in records if (r["kind"] == "list" and r["recommendation_id"] in lists)
                or (r["kind"] == "event" and r.get("recommendation_id") in lists)]
        out[phase] = {"from_s": round(start, 1), "to_s": round(end, 1),
                      **{k: v for k, v in summarize(part).as_dict()["variants"].items()}}
    return out


def _served_by(record: dict, versions: dict[str, str]) -> str:
    """The chart's series: the model that served the list (its role in the loop), else the rule."""
    if record["strategy"] == "personalized" and record["model_version"]:
        return versions.get(record["model_version"], record["model_version"])
    return "trending (fallback)"


def _wait_for_attribution(redis_url: str, name: str, expected: dict[str, dict[str, int]],
                          timeout_s: float = 60.0) -> dict:
    from services.experiments.report import load_report

    keys = ("impressions", "clicks", "add_to_carts", "purchases")
    deadline = time.monotonic() + timeout_s
    while True:
        report = asyncio.run(_with_redis(redis_url, lambda r: load_report(r, name, control=CONTROL)))
        got = {row["variant"]: {k: int(row[k]) for k in keys} for row in report["variants"]}
        if got == expected or time.monotonic() > deadline:
            return {"equal": got == expected, "attributed": got, "shoppers_log": expected}
        time.sleep(1.0)  # the attribution job catching up with the last events


def run_loop(cfg: LoopConfig, command: str) -> dict:
    """The loop of the module docstring; returns what loop.json holds."""
    from services.experiments.policy import PromotionPolicy

    models_dir, log_dir = cfg.workdir / "models", cfg.workdir / "logs"
    if models_dir.exists():
        shutil.rmtree(models_dir)  # every run starts from its own first model
    for d in (models_dir, log_dir, cfg.results):
        d.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"command": command, "config": {k: str(v) if isinstance(v, Path) else v
                                                             for k, v in asdict(cfg).items()}}
    shop = SyntheticConfig(users=cfg.users, items=cfg.items, categories=cfg.categories, seed=cfg.seed)
    dataset = generate(shop)
    data = write_dataset(dataset, cfg.workdir / "data")
    with contextlib.ExitStack() as stack_guard:
        kafka, redis = stack_guard.enter_context(infrastructure(redis_dir=cfg.workdir / "redis"))
        _say(f"Kafka at {kafka}, Redis at {redacted(redis)}")
        asyncio.run(_with_redis(redis, lambda r: r.flushdb()))  # experiments and attribution of earlier runs
        ensure_topics(kafka, 4)
        # The history goes through Kafka first and the first model is trained after it (on the
        # same history), so it is published after every event it saw: retrain's hold-out then
        # holds only what the shoppers did later.
        _say("replaying the generated history through Kafka")
        producer = stack_guard.enter_context(EventProducer(kafka))
        producer.send_catalog(catalog_from_docs(dataset.catalog))
        result["replayed_events"] = replay(producer, dataset.sequences)
        t0 = time.monotonic()
        _say(f"training the first model on the generated history ({cfg.users} users, {cfg.items} items)")
        _train_initial(data, models_dir, cfg.train_args, log_dir)
        from services.common.bundle import latest_version
        first = latest_version(models_dir)
        result["first_model"] = {"version": first, "train_seconds": round(time.monotonic() - t0, 1)}
        _say(f"model {first}")
        env = {"SHOPSTREAM_RANKER_RELOAD_INTERVAL_S": "1", "SHOPSTREAM_FEATURES_MODEL_RELOAD_INTERVAL_S": "1"}
        stack = stack_guard.enter_context(ServiceStack(kafka, redis, models_dir, log_dir, partitions=4,
                                                       extra_env=env))
        _say(f"services up: gateway {stack.gateway_addr}; waiting for the replayed history to be applied")
        sample = list(dataset.sequences)[-5:]
        deadline = time.monotonic() + 120
        while not all(fetch(stack.gateway_addr, u).strategy == gateway_pb2.STRATEGY_PERSONALIZED for u in sample):
            if time.monotonic() > deadline:
                raise RuntimeError("the replayed history was not applied within 120 s")
            time.sleep(0.5)

        sim_cfg = SimulationConfig(shoppers=cfg.shoppers, duration_s=0, seed=cfg.seed, think_s=cfg.think_s,
                                   session_gap_s=cfg.session_gap_s, drift_after_s=cfg.warmup_s,
                                   max_in_flight=cfg.max_in_flight, timeout_s=10.0)
        journal = Journal(cfg.workdir / "shoppers.jsonl")
        sim = Simulation(stack.gateway_addr, dataset, sim_cfg, journal)
        metrics_url = f"http://127.0.0.1:{stack.ports['gateway_metrics']}/metrics"
        marks: dict[str, float] = {}
        _say(f"{cfg.shoppers} shoppers shopping; their tastes drift {cfg.warmup_s:.0f} s in")
        sim.start_in_thread()
        try:
            marks["drift"] = cfg.warmup_s
            _wait_until(sim, cfg.warmup_s + cfg.collect_s)
            marks["retrain starts"] = sim.elapsed()
            _say(f"{sim.elapsed():.0f} s: retraining from the Kafka log (shopstream retrain --experiment)")
            comparison = _retrain(cfg, kafka, redis, stack, models_dir, cfg.workdir / "retrain")
            shutil.copyfile(cfg.workdir / "retrain" / "retrain.json", cfg.results / "retrain.json")
            candidate = comparison["models"]["candidate"]["version"]
            marks["experiment starts"] = next((r["t"] for r in list(journal.records) if r["kind"] == "list"
                                               and r.get("experiment") == cfg.experiment), sim.elapsed())
            _say(f"{sim.elapsed():.0f} s: experiment {cfg.experiment}: control {first} vs candidate {candidate}")
            policy = PromotionPolicy(metric="ctr", alpha=cfg.alpha, min_impressions=cfg.min_impressions)
            decision, experiment_end = None, marks["experiment starts"] + cfg.experiment_max_s
            while sim.elapsed() < experiment_end:
                _wait_until(sim, min(experiment_end, sim.elapsed() + cfg.report_every_s))
                report = _report(redis, cfg.experiment, metrics_url)
                decision = _decide(redis, report, models_dir, policy)
                _say(f"{sim.elapsed():.0f} s: policy: {decision.reason}")
                if decision.variant is not None:
                    break
            winner = decision.variant if decision is not None else None
            if winner is None:
                _end_without_winner(redis, cfg.experiment, models_dir)
            marks[f"promotion: {winner or 'none, control kept'}"] = sim.elapsed()
            promoted_at = time.time()
            _wait_until(sim, sim.elapsed() + cfg.after_s)
        finally:
            sim.stop()
            sim.join(timeout=60)
            journal.close()
        ended = sim.elapsed()
        records = journal.records
        _say(f"shoppers stopped after {ended:.0f} s; checking the attribution against their log")
        in_experiment = [r for r in records if r["kind"] != "list" or r.get("experiment") == cfg.experiment]
        lists = {r["recommendation_id"] for r in in_experiment if r["kind"] == "list"}
        in_experiment = [r for r in in_experiment if r["kind"] == "list" or r.get("recommendation_id") in lists]
        expected = {v: {"impressions": t.impressions, "clicks": t.clicks, "add_to_carts": t.add_to_carts,
                        "purchases": t.purchases} for v, t in summarize(in_experiment).variants.items()}
        result["attribution_check"] = _wait_for_attribution(redis, cfg.experiment, expected)
        report = _report(redis, cfg.experiment, metrics_url)

    from services.experiments.chart import write_chart

    (cfg.results / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_chart(report, cfg.results / "experiment.png", promoted_at_ms=int(promoted_at * 1000) if winner else None)
    versions = {first: f"first model ({first})", candidate: f"retrained ({candidate})"}
    series = ctr_over_time(records, cfg.bucket_s, key=lambda r: _served_by(r, versions))
    write_loop_chart(series, marks, cfg.results / "ctr_over_time.png")
    summary = summarize(records)
    (cfg.results / "shoppers.summary.json").write_text(json.dumps(summary.as_dict(), indent=2), encoding="utf-8")
    (cfg.results / "command.txt").write_text(command + "\n", encoding="utf-8")
    phases = {"before drift": (0.0, marks["drift"]), "after drift, first model": (marks["drift"],
                                                                                   marks["experiment starts"]),
              "experiment": (marks["experiment starts"], marks[next(m for m in marks if m.startswith("promotion"))]),
              "after promotion": (marks[next(m for m in marks if m.startswith("promotion"))], ended)}
    result.update({
        "candidate": {"version": candidate, "offline": comparison["models"],
                      "better_offline": comparison["better_offline"]},
        "decision": {"winner": winner, "reason": decision.reason if decision else "no report"},
        "live_after": candidate if winner == CANDIDATE else first,
        "marks_s": {k: round(v, 1) for k, v in marks.items()},
        "phases": _phase_summaries(records, phases),
        "ctr_series": series,
        "shoppers": summary.as_dict(),
    })
    (cfg.results / "loop.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def _wait_until(sim: Simulation, at_s: float) -> None:
    """Until the simulator has run ``at_s`` seconds (the loop's phases are timed by it);
    a simulator that died stops the loop."""
    while sim.elapsed() < at_s:
        if sim.error is not None:
            raise RuntimeError(f"the simulator stopped: {sim.error!r}")
        time.sleep(min(0.5, max(0.0, at_s - sim.elapsed())))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, train_args = argv[:split], argv[split + 1:]
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, json_format=False)
    cfg = LoopConfig(workdir=args.workdir, results=args.results or args.workdir / "results", users=args.users,
                     items=args.items, categories=args.categories, seed=args.seed, shoppers=args.shoppers,
                     think_s=args.think, session_gap_s=args.session_gap, max_in_flight=args.max_in_flight,
                     warmup_s=args.warmup, collect_s=args.collect, retrain_window_s=args.retrain_window,
                     experiment_max_s=args.experiment_max, after_s=args.after,
                     report_every_s=args.report_every, min_impressions=args.min_impressions, alpha=args.alpha,
                     bucket_s=args.bucket, experiment=args.experiment)
    if train_args:
        cfg.train_args = train_args
    command = "shopstream loop " + shlex.join([*argv, *(["--", *train_args] if train_args else [])])
    result = run_loop(cfg, command)
    _say(f"decision: {result['decision']['winner'] or 'no winner'} ({result['decision']['reason']})")
    for phase, variants in result["phases"].items():
        cells = ", ".join(f"{v}: CTR {row['ctr']:.3f} (true {row['expected_ctr']:.3f}, {row['impressions']} lists)"
                          for v, row in variants.items() if isinstance(row, dict))
        _say(f"{phase}: {cells}")
    check = result["attribution_check"]
    _say(f"attribution = shoppers' log: {check['equal']}")
    _say(f"results in {cfg.results}/")
    return 0 if check["equal"] else 1
