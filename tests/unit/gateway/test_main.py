"""`shopstream gateway --help` answers without connecting anywhere and names every setting's variable."""
import pytest

from services.cli import main as cli_main
from services.common.settings import env_name
from services.gateway.settings import GatewaySettings


def test_help_lists_every_environment_variable_and_exits_0(capsys, monkeypatch):
    monkeypatch.delenv("SHOPSTREAM_GATEWAY_RANKER_ADDR", raising=False)  # --help needs no settings
    with pytest.raises(SystemExit) as exit_:
        cli_main(["gateway", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: shopstream gateway" in out
    for field in GatewaySettings.model_fields:
        assert env_name(GatewaySettings, field) in out
