import pytest

from services.common.settings import SettingsError, load
from services.ranker.settings import RankerSettings


def test_defaults(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    s = load(RankerSettings)
    assert s.addr == "127.0.0.1:50051"
    assert s.max_k >= 100


def test_bad_addr_names_the_variable(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_RANKER_ADDR", "nonsense")
    with pytest.raises(SettingsError) as err:
        load(RankerSettings)
    assert "SHOPSTREAM_RANKER_ADDR" in str(err.value)
