"""``shopstream up --retrain-every S``: the closed loop on a schedule.

Every ``S`` seconds: the experiment of the previous round is decided by the promotion policy
(``shopstream experiments report NAME --auto-promote``: promoted when every variant has its
minimum sample, the test is significant and no guardrail is broken; otherwise it keeps
running), then ``shopstream retrain`` trains a candidate on the event log Kafka retains (all
of it: the demo's traffic is one replay, so a window of the last ``S`` seconds would often be
empty), publishes it and starts experiment ``retrain-N`` (live vs candidate). A round whose
previous experiment is still undecided publishes its candidate but cannot start a second
experiment (one runs at a time): the console says so and the next round asks the policy again.
Each step is a process of its own, its output in ``retrain.log``. Experiments need traffic to
decide: `shopstream up` replays its users once, so run ``shopstream simulate`` beside it (or
real storefront traffic) for the policy to have lists to count.
"""
from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass
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
    running_experiment: str | None = None
    rounds: int = 0
    _proc: subprocess.Popen | None = None

    def decide(self) -> list[str] | None:
        """The policy's command for the running experiment (None when there is none)."""
        if self.running_experiment is None:
            return None
        return [*COMMAND, "experiments", "--redis", self.redis, "report", self.running_experiment,
                "--auto-promote", "--models-dir", str(self.models_dir),
                "--json", str(self.log_path.parent / f"{self.running_experiment}.report.json")]

    def retrain(self, name: str) -> list[str]:
        return [*COMMAND, "retrain", "--kafka", self.kafka, "--models-dir", str(self.models_dir),
                "--redis", self.redis, "--ranker", self.ranker, "--experiment", name, "--max-minutes", f"{self.train_minutes:g}"]

    def round(self) -> None:
        """One round: decide the running experiment, then retrain and start the next one."""
        self.rounds += 1
        decide = self.decide()
        if decide is not None:
            code = self._run(decide)
            verdict = "decided" if code == 0 else "not decided (too few lists served in it?)"
            self.say(f"==> retrain schedule: the promotion policy on {self.running_experiment}: {verdict}; "
                     f"see {self.log_path}")
        name = f"retrain-{self.rounds}"
        code = self._run(self.retrain(name))
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
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def _run(self, command: Sequence[str]) -> int:
        if self.run is not None:
            return self.run(command)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT)
            return self._proc.wait()
