"""``shopstream up`` as a newcomer runs it (``make run``), then the client commands as the README
writes them, without flags, from the same directory while it runs.

A small dataset and a one-epoch model keep it to about a minute; every port is the OS's pick
(``--free-ports``), so it runs beside anything else, and the state file says where things are.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.helpers import wait_for

from services.ingest.datasets import read_sequences
from services.ingest.synthetic import SyntheticConfig, generate, write_dataset
from services.stack.local import gateway_has_http
from services.stack.popularity import popularity
from services.stack.state import StackState

pytestmark = pytest.mark.integration

SHOPSTREAM = Path(sys.executable).parent / "shopstream"
UP_TIMEOUT_S = 240  # bounds that only a hang reaches


def _clean_env() -> dict[str, str]:
    """No addresses from the environment: the commands must find the stack on their own."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("SHOPSTREAM_") and k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}


class _Console:
    """What ``shopstream up`` prints, collected as it comes."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.mark.timeout(UP_TIMEOUT_S + 60)
def test_up_then_client_commands_without_flags(tmp_path):
    data = write_dataset(generate(SyntheticConfig(users=300, items=120, categories=6, seed=5)), tmp_path / "data")
    env = _clean_env()
    proc = subprocess.Popen(
        [str(SHOPSTREAM), "up", "--free-ports", "--dataset", str(data["sequences"]),
         "--attributes", str(data["attributes"]), "--users", "40", "--rate", "5000", "--no-prometheus",
         "--train-args", "--epochs 1 --dim 16 --threads 1 --parity-users 20"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    console = _Console(proc)
    try:
        wait_for(lambda: "==> running; Ctrl-C to stop" in console.text() or proc.poll() is not None,
                 timeout=UP_TIMEOUT_S, interval=0.2, what="shopstream up running")
        assert proc.poll() is None, console.text()
        state = StackState.read(tmp_path / "var" / "stack.json")
        assert state.pid == proc.pid and state.gateway in console.text()

        recommend = subprocess.run([str(SHOPSTREAM), "recommend", "u1"], cwd=tmp_path, env=env,
                                   capture_output=True, text=True, timeout=60)
        assert recommend.returncode == 0, recommend.stderr
        assert recommend.stdout.startswith("[") and "model=v" in recommend.stdout

        item = read_sequences(data["sequences"])["u1"][0]
        publish = subprocess.run([str(SHOPSTREAM), "ingest", "publish", "--user", "u1", "--item", item,
                                  "--type", "view"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=60)
        assert publish.returncode == 0, publish.stderr
        assert '"user_id": "u1"' in publish.stdout
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    out = console.text()
    assert code == 0, out
    assert "==> stopped" in out
    assert not (tmp_path / "var" / "stack.json").exists()

    # The console is for people: ==> lines and progress, no JSON log lines.
    assert not [line for line in console.lines if line.lstrip().startswith("{")], out
    assert "training (early stopping" in out and "1/1 epoch" in out  # plain progress: stdout is no TTY here
    assert "replay: " in out and " event" in out
    logs = tmp_path / "var" / "logs"
    assert f"logs: {Path('var') / 'logs'}/" in out
    for name in ("features", "ranker", "gateway", "train", "up"):
        assert (logs / f"{name}.log").stat().st_size > 0, name
    assert '"msg": "epoch 1 loss' in (logs / "train.log").read_text()  # the trainer's JSON lines went there
    if gateway_has_http():
        assert f"demo storefront     {state.demo}" in out

    # The first trending list is the data's popularity, not catalog order.
    counts = dict(popularity(read_sequences(data["sequences"])))
    first = next(line for line in console.lines if line.strip().startswith("[trending"))
    shown = [item.strip() for item in first.split("]", 1)[1].split(",")]
    top = sorted(counts.values(), reverse=True)[: len(shown)]
    assert [counts[i] for i in shown] == top, (first, top)
    assert shown != sorted(shown)


@pytest.mark.parametrize("command, flag", [
    (("recommend", "u1"), "--gateway HOST:PORT"),
    (("ingest", "publish", "--user", "u1", "--item", "42", "--type", "view"), "--bootstrap HOST:PORT"),
])
def test_without_a_running_stack_client_commands_say_so_in_one_line(tmp_path, command, flag):
    done = subprocess.run([str(SHOPSTREAM), *command], cwd=tmp_path, env=_clean_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "no running stack found" in done.stderr and "shopstream up" in done.stderr and flag in done.stderr


async def test_seeding_fills_only_an_empty_trending_set(redis_client, redis_url):
    import asyncio

    from services.common.stores.trending import RedisTrendingStore
    from services.stack.popularity import SEED_TOP_WEIGHT, seed_trending

    sequences = {"u1": ["10", "2", "2"], "u2": ["2", "100", "10"], "u3": ["2"]}
    assert await asyncio.to_thread(seed_trending, redis_url, sequences) == 3
    top = await RedisTrendingStore(redis_client).top(10)
    assert [item for item, _ in top] == ["2", "10", "100"]
    assert top[0][1] == SEED_TOP_WEIGHT and top[1][1] == SEED_TOP_WEIGHT / 2

    assert await asyncio.to_thread(seed_trending, redis_url, {"u9": ["7"] * 50}) == 0  # not empty: kept
    assert [item for item, _ in await RedisTrendingStore(redis_client).top(10)] == ["2", "10", "100"]
