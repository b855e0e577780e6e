"""``shopstream up --retrain-every S``: the closed loop on a schedule.

Every ``S`` seconds: the experiment of the previous round is decided by the promotion policy
(``shopstream experiments report NAME --auto-promote``: promoted when every variant has its
minimum sample, the test is significant and no guardrail is broken; otherwise it keeps
running), then ``shopstream retrain`` trains a candidate on the event log Kafka retains (all
of it: the demo's traffic is one replay, so a window of the last ``S`` seconds would often be
empty), publishes it and starts experiment ``<prefix>-N`` (live vs candidate; the prefix is
``retrain-`` and the schedule's start time, UTC, so a later ``shopstream up`` on the same
Redis never reuses a name whose definition and attribution counters are kept). A round whose
previous experiment is still undecided publishes its candidate but cannot start a second
experiment (one runs at a time): the console says so and the next round asks the policy again.
Each step is a process of its own, its output in ``retrain.log``. Experiments need traffic to
decide: `shopstream up` replays its users once, so run ``shopstream simulate`` beside it (or
real storefront traffic) for the policy to have lists to count. ``train_args`` go to every
retrain (``shopstream train`` flags, as ``up --train-args``), ``policy_args`` to every decision
(``--min-impressions``, ``--alpha``, ... of ``experiments report``).

``stop`` ends the step in flight (SIGTERM to its process) and no step starts after it: the
round in progress returns instead of going on to its next command.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

COMMAND = [sys.executable, "-m", "services"]


@dataclass
class RetrainSchedule:
    every_s: float
    kafka: str
    redis: str
    ranker: str
    models_dir: Path
    log_path: Path
    train_minutes: float
    say: Callable[[str], None]
    run: Callable[[Sequence[str]], int] | None = None  # runs one command, returns its exit code
    train_args: Sequence[str] = ()
    policy_args: Sequence[str] = ()
    running_experiment: str | None = None
    prefix: str = field(default_factory=lambda: f"retrain-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    rounds: int = 0
    stopped: bool = False
    _proc: subprocess.Popen | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def decide(self) -> list[str] | None:
        """The policy's command for the running experiment (None when there is none)."""
        if self.running_experiment is None:
            return None
        return [*COMMAND, "experiments", "--redis", self.redis, "report", self.running_experiment,
                "--auto-promote", "--models-dir", str(self.models_dir),
                "--json", str(self.report_path(self.running_experiment)), *self.policy_args]

    def report_path(self, experiment: str) -> Path:
        """Where the policy's last report on ``experiment`` goes (its ``decision`` included)."""
        return self.log_path.parent / f"{experiment}.report.json"

    def verdict(self, experiment: str) -> str:
        """What the policy's report on ``experiment`` says it did: promoted a variant, or kept it running."""
        try:
            decision = json.loads(self.report_path(experiment).read_text(encoding="utf-8"))["decision"]
        except (OSError, ValueError, KeyError, TypeError):
            return "decided"
        if decision["promoted"]:
            return f"promoted {decision['promoted']}"
        return f"kept running ({decision['reason']})"

    def retrain(self, name: str) -> list[str]:
        return [*COMMAND, "retrain", "--kafka", self.kafka, "--models-dir", str(self.models_dir),
                "--redis", self.redis, "--ranker", self.ranker, "--experiment", name,
                "--max-minutes", f"{self.train_minutes:g}", *self.train_args]

    def round(self) -> None:
        """One round: decide the running experiment, then retrain and start the next one."""
        self.rounds += 1
        decide = self.decide()
        if decide is not None:
            code = self._run(decide)
            if self.stopped:
                return
            verdict = self.verdict(self.running_experiment) if code == 0 else \
                "not decided (too few lists served in it?)"
            self.say(f"==> retrain schedule: the promotion policy on {self.running_experiment}: {verdict}; "
                     f"see {self.log_path}")
        name = f"{self.prefix}-{self.rounds}"
        code = self._run(self.retrain(name))
        if self.stopped:
            return
        if code == 0:
            self.running_experiment = name
            self.say(f"==> retrain schedule: candidate published, experiment {name} started")
        else:
            self.say(f"==> retrain schedule: round {self.rounds} started no experiment (exit {code}: nothing to "
                     f"train on, or an undecided experiment still runs); see {self.log_path}")

    def run_until(self, stop: threading.Event) -> None:
        while not stop.wait(self.every_s):
            self.round()

    def stop(self, stop: threading.Event) -> None:
        """End the schedule and the step in progress (called before the services stop)."""
        stop.set()
        with self._lock:  # after this, _run starts nothing
            self.stopped = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def _run(self, command: Sequence[str]) -> int:
        if self.stopped:
            return -1
        if self.run is not None:
            return self.run(command)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out, self._lock:
            if self.stopped:
                return -1
            self._proc = proc = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT)
        return proc.wait()
