"""The serving images carry no torch (it is the `train` extra): the services must import without it."""
from __future__ import annotations

import subprocess
import sys

import pytest

# What the features, ranker and gateway images run: their commands and their health checks.
SERVING_MODULES = ("services.features.main", "services.ranker.main", "services.gateway.main",
                   "services.cli", "services.stack.processes")


@pytest.mark.parametrize("module", SERVING_MODULES)
def test_imports_with_torch_blocked(module):
    # A None entry in sys.modules makes every `import torch` (and torch.*) raise ImportError.
    code = f"import sys; sys.modules['torch'] = None; import {module}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_blocking_torch_is_noticed():
    """The check above would pass vacuously if blocking did not work: a trainer module fails."""
    code = "import sys; sys.modules['torch'] = None; import services.training.model"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "torch" in result.stderr
