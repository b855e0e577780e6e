import pytest

from services.common.settings import SettingsError, load
from services.gateway.settings import GatewaySettings


def test_missing_ranker_addr_fails_fast_naming_the_variable(monkeypatch):
    monkeypatch.delenv("SHOPSTREAM_GATEWAY_RANKER_ADDR", raising=False)
    with pytest.raises(SettingsError) as err:
        load(GatewaySettings)
    assert "SHOPSTREAM_GATEWAY_RANKER_ADDR" in str(err.value)


def test_reads_the_environment(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_GATEWAY_RANKER_ADDR", "ranker:50051")
    monkeypatch.setenv("SHOPSTREAM_GATEWAY_RANKER_TIMEOUT_S", "0.2")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    s = load(GatewaySettings)
    assert s.ranker_addr == "ranker:50051"
    assert s.ranker_timeout_s == 0.2
    assert s.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert (s.default_k, s.max_k) == (10, 100)
