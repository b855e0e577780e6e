"""services.stack.state: the fixed ports' check and the state file client commands read."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from services.stack.state import PORTS, STATE_FILE_VAR, PortInUse, StackState, check_ports, find_state, port_free, \
    remove_state, state_path


def _state(pid: int, **kw) -> StackState:
    return StackState(pid=pid, workdir="/w", kafka="127.0.0.1:9092", redis="redis://:***@127.0.0.1:6379/0",
                      gateway="127.0.0.1:50052", ranker="127.0.0.1:50051", **kw)


def test_defaults_are_the_services_own():
    from services.gateway.settings import GatewaySettings
    from services.ranker.settings import RankerSettings

    assert f"127.0.0.1:{PORTS['gateway'][0]}" == GatewaySettings.model_fields["addr"].default
    assert f"127.0.0.1:{PORTS['ranker'][0]}" == RankerSettings.model_fields["addr"].default
    assert PORTS["gateway_metrics"][0] == GatewaySettings.model_fields["metrics_port"].default
    assert PORTS["ranker_metrics"][0] == RankerSettings.model_fields["metrics_port"].default


def test_a_taken_port_is_named_with_its_flag():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_free(port)
        with pytest.raises(PortInUse) as err:
            check_ports({"gateway": port, "ranker": 0})
    assert f"port {port} (gateway) is in use: pass --gateway-port PORT" in str(err.value)
    assert port_free(port)
    check_ports({"gateway": port})  # free again: no error


def test_a_written_state_is_found_from_the_directory_or_below(tmp_path, monkeypatch):
    monkeypatch.delenv(STATE_FILE_VAR, raising=False)
    path = state_path(tmp_path / "var")
    _state(os.getpid(), metrics={"gateway": "http://127.0.0.1:9104/metrics"}).write(path)
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for cwd in (tmp_path, tmp_path / "sub" / "deeper"):
        found = find_state(cwd)
        assert found is not None and found.gateway == "127.0.0.1:50052"
        assert found.metrics == {"gateway": "http://127.0.0.1:9104/metrics"}
    remove_state(path, pid=os.getpid() + 1)  # not ours: kept
    assert path.exists()
    remove_state(path, pid=os.getpid())
    assert not path.exists() and find_state(tmp_path) is None


def test_a_stale_state_is_no_stack(tmp_path, monkeypatch):
    monkeypatch.delenv(STATE_FILE_VAR, raising=False)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _state(int(gone.stdout)).write(state_path(tmp_path / "var"))
    assert find_state(tmp_path) is None


def test_the_variable_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.json"
    _state(os.getpid(), gateway_http="http://127.0.0.1:8080").write(path)
    monkeypatch.setenv(STATE_FILE_VAR, str(path))
    assert find_state(tmp_path / "nowhere").gateway_http == "http://127.0.0.1:8080"


def test_the_redis_url_with_its_password_is_kept_owner_only_beside_the_state(tmp_path, monkeypatch):
    from services.experiments.report_cli import default_redis_url
    from services.stack.state import stack_redis_url, write_private

    secret = tmp_path / "var" / "redis.url"
    secret.parent.mkdir()
    secret.write_text("stale\n")
    secret.chmod(0o644)  # left by an earlier run with a looser mode
    write_private(secret, "redis://:pw@127.0.0.1:6390/0")
    assert secret.stat().st_mode & 0o777 == 0o600
    path = state_path(tmp_path / "var")
    _state(os.getpid(), redis_url_file=str(secret)).write(path)
    monkeypatch.setenv(STATE_FILE_VAR, str(path))
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert stack_redis_url() == "redis://:pw@127.0.0.1:6390/0"
    assert default_redis_url() == "redis://:pw@127.0.0.1:6390/0"  # what `shopstream experiments` connects to
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    assert default_redis_url() == "redis://elsewhere:6379/0"  # the variable still wins
    secret.unlink()
    assert stack_redis_url() is None


def test_retrain_and_promote_take_what_they_were_not_given_from_the_stack(tmp_path, monkeypatch):
    from services.experiments import cli as experiments_cli
    from services.stack.state import write_private
    from services.training.from_kafka import build_parser, with_stack_defaults

    for var in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "SHOPSTREAM_RANKER_ADDR", "SHOPSTREAM_MODELS_DIR",
                "SHOPSTREAM_RANKER_MODELS_DIR"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "stack.json"
    write_private(tmp_path / "redis.url", "redis://:secret@127.0.0.1:6379/0")
    _state(os.getpid(), redis_url_file=str(tmp_path / "redis.url"), models_dir="/w/models").write(path)
    monkeypatch.setenv(STATE_FILE_VAR, str(path))

    args = with_stack_defaults(build_parser().parse_known_args(["--since", "1h"])[0])
    assert (args.kafka, args.redis, args.ranker, str(args.models_dir)) == (
        "127.0.0.1:9092", "redis://:secret@127.0.0.1:6379/0", "127.0.0.1:50051", "/w/models")
    given = with_stack_defaults(build_parser().parse_known_args(["--kafka", "k:1", "--models-dir", "m"])[0])
    assert (given.kafka, str(given.models_dir)) == ("k:1", "m")  # what is given wins

    promote = experiments_cli.build_parser().parse_args(["promote", "ab", "control"])
    assert str(experiments_cli._models_dir(promote)) == "/w/models"
