"""Settings fail fast, naming the variable an operator must fix."""
import pytest
from pydantic import Field
from pydantic_settings import BaseSettings

from services.common.infra import redis_field
from services.common.settings import SettingsError, load, service_config


class DemoSettings(BaseSettings):
    model_config = service_config("DEMO")
    port: int = Field(1, ge=1)
    redis_url: str = redis_field()


def test_invalid_value_names_the_prefixed_variable(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_DEMO_PORT", "zero")
    with pytest.raises(SettingsError, match="SHOPSTREAM_DEMO_PORT: Input should be a valid integer"):
        load(DemoSettings)


def test_shared_variables_are_named_without_prefix(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://example:1/0")
    assert load(DemoSettings).redis_url == "redis://example:1/0"


def test_a_misspelt_variable_stops_start_up(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_DEMO_PROT", "80")
    with pytest.raises(SettingsError, match="SHOPSTREAM_DEMO_PROT: no such setting"):
        load(DemoSettings)
