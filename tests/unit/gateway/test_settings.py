import json

import pytest

from services.common.settings import SettingsError, load
from services.gateway.settings import GatewaySettings


def test_missing_ranker_addr_fails_fast_naming_the_variable(monkeypatch):
    monkeypatch.delenv("SHOPSTREAM_GATEWAY_RANKER_ADDR", raising=False)
    with pytest.raises(SettingsError) as err:
        load(GatewaySettings)
    assert "SHOPSTREAM_GATEWAY_RANKER_ADDR" in str(err.value)


def test_reads_the_environment(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_GATEWAY_AUTH", "disabled")
    monkeypatch.setenv("SHOPSTREAM_GATEWAY_RANKER_ADDR", "ranker:50051")
    monkeypatch.setenv("SHOPSTREAM_GATEWAY_RANKER_TIMEOUT_S", "0.2")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    s = load(GatewaySettings)
    assert s.ranker_addr == "ranker:50051"
    assert s.ranker_timeout_s == 0.2
    assert s.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert (s.default_k, s.max_k) == (10, 100)


TOKENS = {"clients": [{"name": "web", "tokens": ["t" * 32], "methods": ["Recommend"],
                       "limits": {"requests": {"per_s": 5}}}]}


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_GATEWAY_RANKER_ADDR", "ranker:50051")
    for name in ("AUTH", "TOKENS", "TOKENS_FILE"):
        monkeypatch.delenv(f"SHOPSTREAM_GATEWAY_{name}", raising=False)
    return monkeypatch


def test_no_tokens_and_auth_not_disabled_stops_start_up_naming_the_variables(env):
    with pytest.raises(SettingsError) as err:
        load(GatewaySettings)
    for name in ("SHOPSTREAM_GATEWAY_TOKENS_FILE", "SHOPSTREAM_GATEWAY_TOKENS", "SHOPSTREAM_GATEWAY_AUTH=disabled"):
        assert name in str(err.value)


def test_auth_disabled_only_when_said_so(env):
    env.setenv("SHOPSTREAM_GATEWAY_AUTH", "disabled")
    s = load(GatewaySettings)
    assert s.auth == "disabled" and s.api_clients() is None
    env.setenv("SHOPSTREAM_GATEWAY_AUTH", "off")  # anything else is a typo, not a way to turn it off
    with pytest.raises(SettingsError, match="SHOPSTREAM_GATEWAY_AUTH"):
        load(GatewaySettings)


def test_tokens_from_a_file_or_the_environment(env, tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(TOKENS))
    env.setenv("SHOPSTREAM_GATEWAY_TOKENS_FILE", str(path))
    (client,) = load(GatewaySettings).api_clients().values()
    assert client.name == "web" and client.limits["requests"].per_s == 5
    env.setenv("SHOPSTREAM_GATEWAY_TOKENS", json.dumps(TOKENS))
    with pytest.raises(SettingsError, match="not both"):
        load(GatewaySettings)
    env.delenv("SHOPSTREAM_GATEWAY_TOKENS_FILE")
    assert load(GatewaySettings).api_clients()
    assert "t" * 32 not in repr(load(GatewaySettings))  # a secret: not in logs or tracebacks


@pytest.mark.parametrize("content, message", [
    ("{not json", "SHOPSTREAM_GATEWAY_TOKENS_FILE .* is not valid JSON"),
    (json.dumps({"clients": [{"name": "web", "tokens": ["short"], "methods": ["Recommend"]}]}),
     "at least 16 characters"),
    (json.dumps({"clients": [{"name": "web", "tokens": ["t" * 32], "methods": ["Teleport"]}]}),
     "methods must be a non-empty list of"),
    (json.dumps({"clients": [{"name": "web", "tokens": ["t" * 32], "methods": ["*"],
                              "limits": {"requests": {"per_s": 0}}}]}), "must be a positive number"),
])
def test_a_bad_token_file_stops_start_up_saying_where(env, tmp_path, content, message):
    path = tmp_path / "tokens.json"
    path.write_text(content)
    env.setenv("SHOPSTREAM_GATEWAY_TOKENS_FILE", str(path))
    with pytest.raises(SettingsError, match=message):
        load(GatewaySettings)


def test_missing_files_and_half_pairs_name_the_variables(env, tmp_path):
    env.setenv("SHOPSTREAM_GATEWAY_AUTH", "disabled")
    env.setenv("SHOPSTREAM_GATEWAY_TLS_CERT_FILE", str(tmp_path / "nope.pem"))
    with pytest.raises(SettingsError, match="SHOPSTREAM_GATEWAY_TLS_CERT_FILE: .*cannot read"):
        load(GatewaySettings)
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    env.setenv("SHOPSTREAM_GATEWAY_TLS_CERT_FILE", str(cert))
    with pytest.raises(SettingsError, match="SHOPSTREAM_GATEWAY_TLS_CERT_FILE and SHOPSTREAM_GATEWAY_TLS_KEY_FILE"):
        load(GatewaySettings)
    env.delenv("SHOPSTREAM_GATEWAY_TLS_CERT_FILE")
    env.setenv("SHOPSTREAM_GATEWAY_RANKER_TLS_CERT_FILE", str(cert))
    env.setenv("SHOPSTREAM_GATEWAY_RANKER_TLS_KEY_FILE", str(cert))
    with pytest.raises(SettingsError, match="needs SHOPSTREAM_GATEWAY_RANKER_TLS_CA_FILE"):
        load(GatewaySettings)


def test_metrics_listen_on_loopback_by_default(env):
    env.setenv("SHOPSTREAM_GATEWAY_AUTH", "disabled")
    assert load(GatewaySettings).metrics_host == "127.0.0.1"
    assert load(GatewaySettings).addr.startswith("127.0.0.1:")
