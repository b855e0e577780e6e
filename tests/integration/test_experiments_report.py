"""``shopstream experiments report`` on a real Redis: counters written by the attribution store,
the command run as a process (text, JSON, PNG), and ``--auto-promote`` ending the experiment."""
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from services.experiments.store import ExperimentStore
from services.features.attribution_store import AttributionConfig, EventRecord, ImpressionRecord, RedisAttributionStore

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000_000


async def serve(store, experiment, variant, lists, clicked, start):
    """``lists`` lists to as many users, the first ``clicked`` of them clicked (by id)."""
    records = []
    for n in range(lists):
        rid, user, at = f"{variant}-{n}", f"{variant}-u{n}", T0 + (n % 3) * 60_000
        records.append(ImpressionRecord(rid, user, variant, experiment, at, ("a", "b")))
        if n < clicked:
            records.append(EventRecord(f"{rid}-c", user, "b", 2, at + 1000, rid))
    await store.write(records)


def report(redis_url, *args):
    return subprocess.run([sys.executable, "-m", "services.cli", "experiments", "--redis", redis_url, "report", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60, env=dict(os.environ))


async def test_report_command_text_json_chart_and_auto_promote(redis_client, redis_url, tmp_path):
    name = f"exp-{uuid.uuid4().hex[:6]}"
    await ExperimentStore(redis_client).set({"name": name, "variants": [
        {"name": "trending", "kind": "trending", "weight": 1}, {"name": "model", "kind": "trending", "weight": 1}]},
        None)
    store = RedisAttributionStore(redis_client, AttributionConfig(bucket_ms=60_000))
    await serve(store, name, "trending", 600, 60, T0)
    await serve(store, name, "model", 600, 120, T0)

    done = report(redis_url, name, "--json", str(tmp_path / "r.json"), "--chart", str(tmp_path / "r.png"))
    assert done.returncode == 0, done.stderr
    assert "control: trending" in done.stdout and "20.00%" in done.stdout
    doc = json.loads((tmp_path / "r.json").read_text())
    model = next(v for v in doc["variants"] if v["variant"] == "model")
    assert (model["impressions"], model["clicks"]) == (600, 120)
    assert model["users"] == pytest.approx(600, rel=0.03)  # a HyperLogLog estimate (standard error 0.81 %)
    assert model["tests"]["ctr"]["p_value"] < 0.001
    assert len(doc["series"]["model"]) == 3  # three one-minute buckets
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"

    wait = report(redis_url, name, "--auto-promote", "--min-impressions", "1000")
    assert wait.returncode == 0 and "no promotion: below 1000 impressions" in wait.stdout
    done = report(redis_url, name, "--auto-promote", "--min-impressions", "500")
    assert "policy: promoted model" in done.stdout, done.stdout + done.stderr
    assert (await ExperimentStore(redis_client).get(name)).winner == "model"


async def test_report_of_an_experiment_without_data_says_so(redis_client, redis_url):
    done = report(redis_url, "nothing-here")
    assert done.returncode == 1 and "no served lists counted" in done.stderr
