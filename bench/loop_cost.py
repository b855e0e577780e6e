"""What the closed loop costs: Recommend throughput and latency with impression logging and
attribution off, on, and on with a running experiment's shadow variant, side by side in one run.

Two parts, in one run:

1. **Component**: the gateway-side CPU per impression (build it from an answer, buffer it,
   publish it through the gateway's own ImpressionLog and Kafka producer on an event loop,
   with the gateway's default linger, answers arriving at about 1,000/s, every one
   acknowledged), measured as process CPU time in this process, and the broker's
   CPU per impression: steadier than wall-clock figures on a machine that runs other work.
2. **End to end**: one Redis, one broker, one ranker, one features worker (its attribution
   job on: it joins impressions and events), and per run a fresh gateway process (impression
   logging on or off: SHOPSTREAM_GATEWAY_IMPRESSIONS_ENABLED). Per round, five configurations
   run back to back (seconds apart, the order rotated per round), each a closed-loop load
   generator (bench.loadgen, its own process) at one concurrency:

     off                  impressions off, no experiment: nothing to attribute
     off-control          the same as off, run again: the spread between two runs of one
                          configuration, i.e. what a smaller difference is worth here
     impressions          impressions on, the features worker paused (SIGSTOP) during the
                          run: the gateway's and the broker's share alone
     loop                 impressions on and attributed as they arrive, the features worker
                          on the same CPUs as the gateway (a deployment gives it its own)
     loop+shadow          as loop, with an experiment serving the live model and a shadow
                          variant scored on every request (sample rate 1.0)

   Between runs the bench waits until attribution has counted every impression published so
   far, so no run pays for the one before. The servers' CPU includes the features worker's.

The shadow names the live model version itself unless the models directory holds a
candidate: its cost (one more Rank per request, joining the same RankBatch calls) is the
same either way; its overlap with the served list is then 1.

Where the processes run: by default all of them share all CPUs, so the features worker's
attribution competes with the gateway for them. With ``--attribution-cpu N`` the features
worker runs alone on CPU N and everything else (Redis, the broker, the ranker, the gateway,
the load generator) on the other CPUs, in every configuration: the gateway's cost with the
attribution job on a machine of its own, as deployed (docs/scaling.md), while what
attribution asks of Redis and the broker still lands on the serving CPUs.

The issue's bound: the loop costs <= 10% of Recommend throughput (loop vs off).

``python -m bench.loop_cost [--quick] [--attribution-cpu N] [--out NAME]``; results in
bench/results/NAME.json (default loop_cost).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from bench import report, world
from services.common.bundle import latest_version
from services.common.bundle.registry import candidate_versions
from services.common.infra import connect_redis
from services.contract.producer import ensure_topics
from services.experiments.store import ExperimentStore
from services.stack.embedded import EmbeddedKafka, EmbeddedRedis
from services.stack.local import ServiceStack

CONFIGS = ("off", "off-control", "impressions", "loop", "loop+shadow")
SHADOW = "loop+shadow"
WARM_UP = 2000  # impressions the component publishes before it measures
PARTITIONS = 4


def _loadgen(addr: str, users: list[str], concurrency: int, seconds: float) -> dict:
    cmd = [sys.executable, "-m", "bench.loadgen", "--kind", "gateway", "--addr", addr, "--concurrency",
           str(concurrency), "--requests", "10000000", "--seconds", str(seconds)]
    out = subprocess.run(cmd, input=json.dumps(users), capture_output=True, text=True, check=True,
                         timeout=seconds + 60, cwd=world.REPO)
    return json.loads(out.stdout)


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) the process has used so far (Linux /proc)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scrape(port: int) -> dict[str, float]:
    """A server's /metrics as {sample name with labels: value} (only what this bench reads)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(("shopstream_gateway_impressions", "shopstream_gateway_shadow",
                            "shopstream_attribution_impressions_total")):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def component(kafka: str, broker_pid: int | None, n: int) -> dict:
    """CPU per impression on the gateway's side (this process) and the broker's, publishing ``n``
    impressions of 10 items through the gateway's ImpressionLog as fast as they are offered."""
    from shopstream.gateway.v1 import gateway_pb2 as gw

    from services.gateway.impressions import ImpressionLog, impression_of
    from services.gateway.metrics import gateway_metrics
    from services.gateway.servicer import new_recommendation_id
    from services.gateway.settings import GatewaySettings

    def answer() -> gw.RecommendResponse:
        resp = gw.RecommendResponse(items=[gw.RecommendedItem(item_id=f"B00{j:07d}", score=1.0 - j / 10)
                                           for j in range(10)], strategy=gw.STRATEGY_PERSONALIZED,
                                    model_version="v20261203155116-6b4948d5")
        resp.variant = resp.model_version
        return resp

    answers = [answer() for _ in range(1000)]
    metrics = gateway_metrics()

    def published() -> float:
        from prometheus_client import REGISTRY

        return REGISTRY.get_sample_value("shopstream_gateway_impressions_published_total") or 0.0

    async def offer(log, ids: list[str]) -> None:
        """Offer one impression per id (the answer's id is made whether impressions are on or off);
        without ``log``, the same loop offering nothing: the pacing's own CPU, subtracted."""
        target = published() + len(ids)
        for i, recommendation_id in enumerate(ids):
            resp = answers[i % len(answers)]
            resp.recommendation_id = recommendation_id
            if log is not None:
                log.offer(impression_of(resp, f"bench-user-{i % 997}", "recommend"))
            if i % 10 == 9:
                await asyncio.sleep(0.01)  # answers at about 1,000/s, as a busy gateway serves them
        while log is not None and published() < target:
            await asyncio.sleep(0.001)

    async def measure() -> tuple[float, float]:
        """CPU seconds of this process and of the broker for ``n`` impressions, after a warm-up
        (connecting, creating the topic, its metadata: paid once per gateway process)."""
        log = ImpressionLog.to_kafka(kafka, 10.0, metrics, capacity=n + 1, batch_max=500,
                                     linger_s=GatewaySettings.model_fields["impressions_linger_s"].default)
        task = asyncio.create_task(log.run())
        try:
            await offer(log, [new_recommendation_id() for _ in range(WARM_UP)])
            ids = [new_recommendation_id() for _ in range(n)]
            start = time.process_time()
            await offer(None, ids)
            pacing = time.process_time() - start
            start, broker_before = time.process_time(), _cpu_s(broker_pid)
            await offer(log, ids)
            return time.process_time() - start - pacing, _cpu_s(broker_pid) - broker_before
        finally:
            task.cancel()
            await log.close(5.0)

    cpu, broker = asyncio.run(measure())
    return {"impressions": n, "impressions_published": n + WARM_UP, "gateway_cpu_us_per_impression": 1e6 * cpu / n,
            "broker_cpu_us_per_impression": 1e6 * broker / n}


def _experiment_seen(addr: str, user: str, name: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        resp = gateway_pb2_grpc.GatewayServiceStub(channel).Recommend(
            gateway_pb2.RecommendRequest(user_id=user, k=10), timeout=5)
    return resp.experiment == name


def _wait(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (threads and processes it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def run(quick: bool, models: Path | None, users_n: int, rounds: int, concurrency: int,
        attribution_cpu: int | None = None) -> dict:
    seconds = 2.5 if quick else 8.0
    serving_cpus = None
    if attribution_cpu is not None:  # this process first: every server and load generator inherits it
        serving_cpus = os.sched_getaffinity(0) - {attribution_cpu}
        if not serving_cpus or attribution_cpu not in os.sched_getaffinity(0):
            raise SystemExit(f"--attribution-cpu {attribution_cpu}: needs that CPU and at least one other")
        _pin(os.getpid(), serving_cpus)
    models = world.models_dir(models)
    live = latest_version(models)
    candidates = candidate_versions(models)
    shadow_version = candidates[-1] if candidates else live
    sequences = world.sequences_for(models)
    chosen = list(sequences)[:users_n]
    rows = []
    impressions = {"published": 0.0, "dropped_buffer_full": 0.0, "dropped_publish_failed": 0.0}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shopstream-bench-loop-")))
        redis_server = stack.enter_context(EmbeddedRedis(data_dir=tmp / "redis"))
        broker = stack.enter_context(EmbeddedKafka())
        kafka = broker.bootstrap_servers
        ensure_topics(kafka, PARTITIONS)

        async def populate():
            client = connect_redis(redis_server.url)
            try:
                return await world.populate_users(client, models, sequences, chosen)
            finally:
                await client.aclose()

        users = asyncio.run(populate())
        parts = component(kafka, broker.pid, 3000 if quick else 10000)
        print(f"==> component: {parts['gateway_cpu_us_per_impression']:.1f} us of gateway CPU and "
              f"{parts['broker_cpu_us_per_impression']:.1f} us of broker CPU per impression", flush=True)
        quiet = {"SHOPSTREAM_GATEWAY_LOG_LEVEL": "WARNING", "SHOPSTREAM_RANKER_LOG_LEVEL": "WARNING"}
        ranker = ServiceStack(kafka=kafka, redis=redis_server.url, models_dir=models, log_dir=tmp / "ranker",
                              partitions=PARTITIONS, extra_env=quiet)
        stack.callback(ranker.stop)
        ranker.start_service("ranker")
        features = ServiceStack(kafka=kafka, redis=redis_server.url, models_dir=models, log_dir=tmp / "features",
                                partitions=PARTITIONS, extra_env={"SHOPSTREAM_FEATURES_LOG_LEVEL": "WARNING",
                                                                  "SHOPSTREAM_FEATURES_ATTRIBUTION_ENABLED": "true"})
        stack.callback(features.stop)
        features.start_service("features")
        worker = features.processes["features"].proc.pid
        if attribution_cpu is not None:
            _pin(worker, {attribution_cpu})

        def attributed() -> float:
            return sum(v for k, v in _scrape(features.ports["features_metrics"]).items()
                       if k.startswith("shopstream_attribution_impressions_total"))

        _wait(lambda: attributed() >= parts["impressions_published"], "the component's impressions attributed",
              timeout=300)
        already = attributed()
        print(f"==> {len(users)} users, model {live} (shadow: {shadow_version}), concurrency {concurrency}, "
              f"{seconds:g} s per run, a fresh gateway process per run; {placement(attribution_cpu)}", flush=True)

        def experiment(name: str, end: bool) -> None:
            async def change():
                client = connect_redis(redis_server.url)
                try:
                    store = ExperimentStore(client)
                    if end:
                        await store.promote(name, "control")  # ends it: the live model serves
                    else:
                        await store.set({"name": name, "variants": [
                            {"name": "control", "kind": "model", "model_version": live, "weight": 1},
                            {"name": "shadow", "kind": "shadow", "model_version": shadow_version}]},
                            loaded_models=None)  # the versions are in the models dir the ranker loads
                finally:
                    await client.aclose()

            asyncio.run(change())

        def gateway_for(config: str, n: int) -> ServiceStack:
            """A fresh gateway process for one run: a difference between two processes of the same
            configuration (off vs off-control) would otherwise pass for the configuration's cost."""
            env = {**quiet, "SHOPSTREAM_GATEWAY_IMPRESSIONS_ENABLED": "false" if config.startswith("off") else "true"}
            gw = ServiceStack(kafka=kafka, redis=redis_server.url, models_dir=models, log_dir=tmp / f"gw-{n}",
                              partitions=PARTITIONS, extra_env=env)
            gw.ports["ranker"] = ranker.ports["ranker"]  # the same ranker behind every gateway
            gw.start_service("gateway")
            return gw

        runs = 0
        for round_ in range(1, rounds + 1):
            order = CONFIGS[round_ % len(CONFIGS):] + CONFIGS[:round_ % len(CONFIGS)]
            for config in order:
                name = f"bench-shadow-{round_}"
                if config == SHADOW:
                    experiment(name, end=False)  # read by the gateway at start-up
                runs += 1
                gw = gateway_for(config, runs)
                try:
                    if config == SHADOW:
                        _wait(lambda: _experiment_seen(gw.gateway_addr, users[0], name), "the experiment served")
                    if config == "impressions":
                        os.kill(worker, signal.SIGSTOP)  # attribution off for this run
                    try:
                        row = _measure(round_, config, gw, {"ranker": ranker.processes["ranker"].proc.pid,
                                                            "features": worker}, broker, redis_server, users,
                                       concurrency, seconds)
                    finally:
                        if config == "impressions":
                            os.kill(worker, signal.SIGCONT)
                finally:
                    if not config.startswith("off"):
                        time.sleep(0.5)  # the last batch of impressions acknowledged before the count
                        final = _scrape(gw.ports["gateway_metrics"])
                        for key, name_ in (("published", "shopstream_gateway_impressions_published_total"),
                                           ("dropped_buffer_full", 'shopstream_gateway_impressions_dropped_total'
                                                                   '{reason="buffer_full"}'),
                                           ("dropped_publish_failed", 'shopstream_gateway_impressions_dropped_total'
                                                                      '{reason="publish_failed"}')):
                            impressions[key] += final.get(name_, 0.0)
                    gw.stop()
                    if config == SHADOW:
                        experiment(name, end=True)
                # The next run starts with attribution caught up: it pays for no backlog of this one.
                caught_up = time.monotonic()
                _wait(lambda: attributed() - already >= impressions["published"], "attribution caught up", timeout=300)
                row["attribution_catch_up_s"] = time.monotonic() - caught_up
                rows.append(row)
                print(f"    round {round_} {config:<19} {row['rps']:8.0f} req/s  p50 {row['p50_ms']:.2f} ms  "
                      f"p99 {row['p99_ms']:.2f} ms  errors {row['errors']}  degraded {row['degraded']}", flush=True)
    return {"rows": rows, "quick": quick, "rounds": rounds, "concurrency": concurrency, "seconds_per_run": seconds,
            "users": len(users), "model": live, "shadow_model": shadow_version, "impressions": impressions,
            "component": parts, "summary": _summary(rows, parts), "attribution_cpu": attribution_cpu,
            "serving_cpus": sorted(serving_cpus) if serving_cpus else None,
            "notes": f"{placement(attribution_cpu)} (and whatever else runs on the machine); closed loop, "
                     "loopback only"}


def placement(attribution_cpu: int | None) -> str:
    if attribution_cpu is None:
        return (f"{os.cpu_count()} CPUs shared by the features worker (attribution), Redis, the broker, the "
                "ranker, the gateway and the load generator")
    return (f"the features worker (attribution) alone on CPU {attribution_cpu}; Redis, the broker, the ranker, "
            "the gateway and the load generator on the others")


def _measure(round_: int, config: str, gw: ServiceStack, servers: dict[str, int], broker, redis_server,
             users: list[str], concurrency: int, seconds: float) -> dict:
    """One load-generator run against ``gw``: its row (latency, throughput, CPU per request of
    each server process: the gateway, ``servers`` (name -> pid), the broker and Redis; for the
    shadow configuration what the shadow scored)."""
    pids = {"gateway": gw.processes["gateway"].proc.pid, **servers, "broker": broker.pid, "redis": redis_server.pid}
    before = _scrape(gw.ports["gateway_metrics"])
    cpu_before = {k: _cpu_s(pid) for k, pid in pids.items()}
    res = _loadgen(gw.gateway_addr, users, concurrency, seconds)
    cpu = {k: _cpu_s(pid) - cpu_before[k] for k, pid in pids.items()}
    after = _scrape(gw.ports["gateway_metrics"])
    n = len(res["latencies_s"])
    # The servers' CPU per request (the load generator's own is left out): what the
    # throughput would follow on CPUs of their own. It includes the warm-up's requests.
    row = {"round": round_, "config": config, "requests": n,
           "rps": n / res["elapsed_s"] if res["elapsed_s"] else 0.0,
           **report.percentiles_ms(res["latencies_s"]), "errors": sum(res["errors"].values()),
           "degraded": res["degraded"],
           "server_cpu_ms_per_request": 1000 * sum(cpu.values()) / n if n else float("nan"),
           "serving_cpu_ms_per_request": 1000 * sum(v for k, v in cpu.items() if k != "features") / n
           if n else float("nan"),
           **{f"{k}_cpu_ms_per_request": 1000 * v / n if n else float("nan") for k, v in cpu.items()}}
    if config == SHADOW:
        def delta(name: str) -> float:
            return after.get(name, 0.0) - before.get(name, 0.0)

        count = delta("shopstream_gateway_shadow_overlap_ratio_count")
        row["shadow_scored"] = delta('shopstream_gateway_shadow_requests_total{outcome="scored"}')
        row["shadow_skipped_busy"] = delta('shopstream_gateway_shadow_requests_total{outcome="skipped_busy"}')
        row["shadow_mean_overlap"] = (delta("shopstream_gateway_shadow_overlap_ratio_sum") / count
                                      if count else float("nan"))
    return row


def _summary(rows: list[dict], parts: dict) -> dict:
    """Per configuration the median over rounds, and the cost against 'off' per round (median)."""
    by = {(r["round"], r["config"]): r for r in rows}
    rounds = sorted({r["round"] for r in rows})
    out: dict = {}
    for config in CONFIGS:
        out[config] = {"median_rps": statistics.median(by[(n, config)]["rps"] for n in rounds),
                       "median_p99_ms": statistics.median(by[(n, config)]["p99_ms"] for n in rounds)}
        out[config]["median_server_cpu_ms_per_request"] = statistics.median(
            by[(n, config)]["server_cpu_ms_per_request"] for n in rounds)
    for config in CONFIGS[1:]:
        cpu_cost = [1 - by[(n, "off")]["server_cpu_ms_per_request"] / by[(n, config)]["server_cpu_ms_per_request"]
                    for n in rounds]
        out[config]["cpu_cost_per_round"] = cpu_cost
        out[config]["median_cpu_cost"] = statistics.median(cpu_cost)
        serving_cost = [1 - by[(n, "off")]["serving_cpu_ms_per_request"] / by[(n, config)]["serving_cpu_ms_per_request"]
                        for n in rounds]
        out[config]["median_serving_cpu_cost"] = statistics.median(serving_cost)
        cost = [1 - by[(n, config)]["rps"] / by[(n, "off")]["rps"] for n in rounds]
        p99 = [by[(n, config)]["p99_ms"] / by[(n, "off")]["p99_ms"] for n in rounds]
        out[config]["throughput_cost_per_round"] = cost
        out[config]["median_throughput_cost"] = statistics.median(cost)
        out[config]["p99_over_off_per_round"] = p99
        out[config]["median_p99_over_off"] = statistics.median(p99)
    # The component's CPU per impression against the servers' CPU per request with logging off:
    # the throughput cost on CPUs the servers have to themselves (gateway alone; with the broker).
    off_cpu = out["off"]["median_server_cpu_ms_per_request"] * 1000
    off_gateway = statistics.median(by[(n, "off")]["gateway_cpu_ms_per_request"] for n in rounds) * 1000
    gateway_us, broker_us = parts["gateway_cpu_us_per_impression"], parts["broker_cpu_us_per_impression"]
    out["component_cost"] = {
        "gateway_cpu_us_per_request_off": off_gateway, "servers_cpu_us_per_request_off": off_cpu,
        "gateway_share": gateway_us / (off_gateway + gateway_us),
        "servers_share": (gateway_us + broker_us) / (off_cpu + gateway_us + broker_us)}
    out["loop_target_met_by_rps"] = out["loop"]["median_throughput_cost"] <= 0.10
    out["loop_target_met_by_cpu"] = out["loop"]["median_cpu_cost"] <= 0.10
    out["impressions_target_met_by_rps"] = out["impressions"]["median_throughput_cost"] <= 0.10
    out["impressions_target_met_by_cpu"] = out["impressions"]["median_cpu_cost"] <= 0.10
    out["impressions_target_met_by_component"] = out["component_cost"]["servers_share"] <= 0.10
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loop_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2.5 s per run instead of 8 s")
    parser.add_argument("--models-dir", type=Path)
    parser.add_argument("--users", type=int, default=1000, help="users with state in Redis")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", default="loop_cost", help="results name: bench/results/<out>.json")
    parser.add_argument("--attribution-cpu", type=int, metavar="N",
                        help="the features worker (attribution) alone on CPU N, everything else on the other "
                             "CPUs, in every configuration: the gateway's cost with attribution on its own "
                             "machine, as deployed (default: all processes share all CPUs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args.quick, args.models_dir, args.users, args.rounds, args.concurrency, args.attribution_cpu)
    print()
    print(report.table(result["rows"], ["round", "config", "requests", "rps", "p50_ms", "p99_ms", "errors",
                                         "degraded", "server_cpu_ms_per_request", "gateway_cpu_ms_per_request",
                                         "ranker_cpu_ms_per_request", "features_cpu_ms_per_request",
                                         "redis_cpu_ms_per_request",
                                         "broker_cpu_ms_per_request", "attribution_catch_up_s",
                                         "shadow_scored", "shadow_skipped_busy", "shadow_mean_overlap"]))
    s = result["summary"]
    for config in CONFIGS[1:]:
        print(f"{config}: median throughput cost vs off {100 * s[config]['median_throughput_cost']:.1f}% "
              f"(per round {', '.join(f'{100 * c:.1f}%' for c in s[config]['throughput_cost_per_round'])}); "
              f"median p99 {s[config]['median_p99_ms']:.2f} ms vs {s['off']['median_p99_ms']:.2f} ms off; "
              f"servers' CPU per request +{100 * s[config]['median_cpu_cost'] / (1 - s[config]['median_cpu_cost']):.1f}%"
              f" (cost {100 * s[config]['median_cpu_cost']:.1f}% of throughput on dedicated CPUs; without the "
              f"features worker's {100 * s[config]['median_serving_cpu_cost']:.1f}%)")
    c = s["component_cost"]
    print(f"component: {result['component']['gateway_cpu_us_per_impression']:.1f} us gateway + "
          f"{result['component']['broker_cpu_us_per_impression']:.1f} us broker CPU per impression, against "
          f"{c['gateway_cpu_us_per_request_off']:.0f} us gateway / {c['servers_cpu_us_per_request_off']:.0f} us all "
          f"servers' CPU per request off: {100 * c['gateway_share']:.1f}% of the gateway's throughput, "
          f"{100 * c['servers_share']:.1f}% with the broker on the same CPUs")
    print(f"the loop (impressions + attribution) costs <= 10% of throughput: by requests/s "
          f"{'met' if s['loop_target_met_by_rps'] else 'MISSED'}, by the servers' CPU per request "
          f"{'met' if s['loop_target_met_by_cpu'] else 'MISSED'}")
    print(f"impression logging costs <= 10% of throughput: by requests/s "
          f"{'met' if s['impressions_target_met_by_rps'] else 'MISSED'}, by the servers' CPU per request "
          f"{'met' if s['impressions_target_met_by_cpu'] else 'MISSED'}, by the component's CPU "
          f"{'met' if s['impressions_target_met_by_component'] else 'MISSED'} (off-control vs off shows the "
          "end-to-end noise: "
          f"{100 * s['off-control']['median_throughput_cost']:.1f}% throughput)")
    print(f"impressions: {result['impressions']}")
    print(f"results: {report.write(args.out, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
