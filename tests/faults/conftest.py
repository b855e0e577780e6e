"""The fault-injection suite: ``make test-faults`` runs the whole matrix; the default ``pytest``
run (``make test``, CI) only the scenarios marked ``faults_fast``.

``SHOPSTREAM_FAULTS=full`` selects the whole matrix (the Makefile target sets it).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from faults.harness import CATALOG, Rig
from support.toy_bundle import publish_toy_bundle

FULL = os.environ.get("SHOPSTREAM_FAULTS") == "full"


def pytest_collection_modifyitems(config, items):
    if FULL:
        return
    skip = pytest.mark.skip(reason="full fault matrix only: make test-faults")
    for item in items:
        if "tests/faults/" in str(item.path).replace(os.sep, "/") and item.get_closest_marker("faults_fast") is None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fault_models_dir(tmp_path_factory):
    """A toy model bundle (no training): the worker encodes, the ranker ranks ``CATALOG``."""
    models = tmp_path_factory.mktemp("fault-models")
    publish_toy_bundle(models, CATALOG, np.random.default_rng(0).normal(size=(len(CATALOG), 8)))
    return models


@pytest.fixture
def rig(tmp_path, fault_models_dir):
    """Broker, Redis and features worker of this test's own (started); stopped at the end."""
    rig = Rig(tmp_path, fault_models_dir)
    try:
        rig.start_worker()
        yield rig
    finally:
        rig.close()
