"""shopstream up --retrain-every: what each round runs, in order."""
import re
import threading
from pathlib import Path

from services.stack.retrain_schedule import RetrainSchedule


def schedule(outcomes: list[int]):
    ran, said = [], []

    def run(command):
        ran.append(list(command))
        return outcomes.pop(0)

    return RetrainSchedule(60, "127.0.0.1:9092", "redis://127.0.0.1:6379/0", "127.0.0.1:50051", Path("m"),
                           Path("logs/retrain.log"), 2.0, said.append, run=run, prefix="retrain"), ran, said


def test_experiment_names_carry_the_schedules_start_time():
    """A later schedule on the same Redis must not reuse retrain-1: an ended experiment's
    definition and attribution counters are kept under its name."""
    s = RetrainSchedule(60, "k", "r", "a", Path("m"), Path("logs/retrain.log"), 2.0, print, run=lambda c: 0)
    assert re.fullmatch(r"retrain-\d{8}-\d{6}", s.prefix)
    s.round()
    assert s.running_experiment == f"{s.prefix}-1"


def words(command):
    return command[3:5]  # after python -m services


def test_first_round_retrains_and_starts_an_experiment():
    s, ran, said = schedule([0])
    s.round()
    (retrain,) = ran
    assert words(retrain) == ["retrain", "--kafka"]
    assert "--since" not in retrain  # everything retained
    assert retrain[retrain.index("--experiment") + 1] == "retrain-1"
    assert s.running_experiment == "retrain-1" and "experiment retrain-1 started" in said[-1]


def test_later_rounds_let_the_policy_decide_first():
    s, ran, said = schedule([0, 0, 0])
    s.round()
    s.round()
    report, retrain = ran[1], ran[2]
    assert report[3:7] == ["experiments", "--redis", "redis://127.0.0.1:6379/0", "report"]
    assert report[7] == "retrain-1" and "--auto-promote" in report
    assert retrain[retrain.index("--experiment") + 1] == "retrain-2" and s.running_experiment == "retrain-2"


def test_a_round_that_cannot_start_its_experiment_keeps_the_running_one():
    s, ran, said = schedule([0, 0, 1])
    s.round()
    s.round()
    assert s.running_experiment == "retrain-1" and "started no experiment" in said[-1]


def test_stop_ends_the_loop():
    s, ran, _ = schedule([])
    stop = threading.Event()
    s.stop(stop)
    s.run_until(stop)
    assert ran == []
