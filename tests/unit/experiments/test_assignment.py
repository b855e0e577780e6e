"""Assignment: sticky (the same variant on every call, process and replica) and by weight."""
from __future__ import annotations

import subprocess
import sys

from pathlib import Path

from services.experiments.assignment import Assigner, assign, bucket
from services.experiments.definition import parse

ROOT = Path(__file__).resolve().parents[3]


def experiment(name="ab", weights=(50, 30, 20)):
    return parse({"name": name, "variants": [
        {"name": f"v{n}", "kind": "trending" if n == 2 else "model", **({} if n == 2 else {"model_version": f"m{n}"}),
         "weight": w} for n, w in enumerate(weights)] + [{"name": "s", "kind": "shadow", "model_version": "m9"}]})


def test_the_same_user_gets_the_same_variant_every_time():
    a, b = Assigner(experiment()), Assigner(experiment())
    users = [f"user-{n}" for n in range(2000)]
    first = [a.assign(u).name for u in users]
    assert first == [b.assign(u).name for u in users] == [a.assign(u).name for u in users]


def test_stable_across_processes():
    # Another interpreter (another hash seed: PYTHONHASHSEED is random per process) agrees.
    code = ("from services.experiments.assignment import bucket; "
            "print(','.join(f'{bucket(\"ab\", f\"user-{n}\"):.12f}' for n in range(50)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345"}, cwd=ROOT).stdout.strip()
    assert out == ",".join(f"{bucket('ab', f'user-{n}'):.12f}" for n in range(50))


def test_pinned_values_do_not_change_between_releases():
    # A change of hash would move every running experiment's users to other variants.
    assert round(bucket("ab", "user-1"), 9) == 0.51771246
    assert [assign(experiment(), f"user-{n}").name for n in range(8)] == ["v1", "v1", "v1", "v0", "v0", "v0", "v0",
                                                                          "v2"]


def test_distribution_follows_the_weights():
    a = Assigner(experiment())
    n = 30_000
    counts = {"v0": 0, "v1": 0, "v2": 0}
    for i in range(n):
        counts[a.assign(f"u{i}").name] += 1
    for name, share in (("v0", 0.5), ("v1", 0.3), ("v2", 0.2)):
        # 5 standard deviations of a binomial share at n = 30,000 is under 0.015
        assert abs(counts[name] / n - share) < 0.015, counts


def test_shadow_and_zero_weight_variants_are_never_assigned():
    a = Assigner(experiment(weights=(0, 1, 0)))
    assert {a.assign(f"u{i}").name for i in range(2000)} == {"v1"}


def test_experiments_split_users_independently():
    a, b = Assigner(experiment("first", (50, 50, 0))), Assigner(experiment("second", (50, 50, 0)))
    users = [f"u{i}" for i in range(10_000)]
    same = sum(a.assign(u).name == b.assign(u).name for u in users) / len(users)
    assert 0.47 < same < 0.53  # independent halves agree half the time
