"""`shopstream features --help` answers without starting a worker and names every setting's variable."""
import pytest

from services.cli import main as cli_main
from services.common.settings import env_name
from services.features import main as features_main
from services.features.settings import FeaturesSettings


def test_help_lists_every_environment_variable_and_starts_nothing(capsys, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("--help built the worker")

    monkeypatch.setattr(features_main, "build", no_build)
    monkeypatch.setenv("SHOPSTREAM_FEATURES_BATCH_SIZE", "0")  # invalid: --help must not read settings
    with pytest.raises(SystemExit) as exit_:
        cli_main(["features", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: shopstream features" in out and "/healthz/ready" in out
    for field in FeaturesSettings.model_fields:
        assert env_name(FeaturesSettings, field) in out
