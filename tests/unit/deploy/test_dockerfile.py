"""The Dockerfile: one target per image, serving images without torch, non-root, health checks.

No container engine runs here, so nothing is built: the stages are read with dockerfile-parse
and what can be run outside a container (the health-check commands) is run."""
from __future__ import annotations

import fnmatch
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SERVING = ("features", "ranker", "gateway")
BASE_IMAGE = "python:3.11-slim"
# Must equal the Kubernetes manifests' runAsUser (test_k8s checks that side).
UID = "10001"


def dockerignored(path: str, ignore_file: Path = REPO / ".dockerignore") -> bool:
    """Whether the build context leaves ``path`` out. As Docker decides: the last pattern that
    matches the path or one of its parent folders wins, ``!`` re-includes, ``**/`` is any depth."""
    patterns = [line.strip() for line in ignore_file.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    parts = Path(path).parts
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]

    def matches(glob: str, candidate: str) -> bool:
        if glob.startswith("**/"):
            tail = candidate.split("/")
            return any(fnmatch.fnmatchcase("/".join(tail[i:]), glob[3:]) for i in range(len(tail)))
        return fnmatch.fnmatchcase(candidate, glob)

    ignored = False
    for pattern in patterns:
        glob = pattern.removeprefix("!").rstrip("/")
        if any(matches(glob, candidate) for candidate in candidates):
            ignored = not pattern.startswith("!")
    return ignored


def test_every_image_is_a_target(dockerfile):
    assert {*SERVING, "trainer"} <= set(dockerfile.stages)


def test_every_stage_starts_from_python_slim(dockerfile):
    roots = {dockerfile.chain(name)[0].base for name in dockerfile.stages}
    assert roots == {BASE_IMAGE}


def test_torch_is_the_train_extra_only():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [dep for dep in project["dependencies"] if dep.startswith("torch")]
    assert [dep for dep in project["optional-dependencies"]["train"] if dep.startswith("torch")]


@pytest.mark.parametrize("target", SERVING)
def test_serving_images_install_neither_torch_nor_the_train_extra(dockerfile, target):
    runs = "\n".join(run for stage in dockerfile.closure(target) for run in stage.values("RUN"))
    assert "['dependencies']" in runs  # pyproject's [project] dependencies are what it installs
    assert "torch" not in runs and "'train'" not in runs and "[train]" not in runs


def test_the_trainer_image_installs_the_train_extra(dockerfile):
    runs = "\n".join(run for stage in dockerfile.closure("trainer") for run in stage.values("RUN"))
    assert "['optional-dependencies']['train']" in runs
    assert dockerfile.exec_form("trainer", "ENTRYPOINT") == ["shopstream"]


@pytest.mark.parametrize("target", [*SERVING, "trainer"])
def test_images_run_as_a_numeric_non_root_user(dockerfile, target):
    assert dockerfile.last(target, "USER") == f"{UID}:{UID}"


@pytest.mark.parametrize("target", SERVING)
def test_serving_images_run_their_shopstream_command(dockerfile, target):
    assert dockerfile.exec_form(target, "CMD") == ["shopstream", target]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("target", SERVING)
def test_health_check_runs_and_fails_cleanly_when_nothing_answers(dockerfile, target, tmp_path):
    """The HEALTHCHECK command, run here with the image's environment (its port pointed where
    nothing listens): it must import, read its variables and exit 1 without a traceback.
    tests/integration/test_cli.py runs the same commands against the live services."""
    healthcheck = dockerfile.last(target, "HEALTHCHECK")
    assert healthcheck and " CMD " in healthcheck, f"{target} has no HEALTHCHECK"
    command = healthcheck.split(" CMD ", 1)[1]
    image_env = {k: v for k, v in dockerfile.env(target).items() if k.startswith("SHOPSTREAM_")}
    port = str(_free_port())
    for key in image_env:
        if key.endswith("_METRICS_PORT") and target == "features":
            image_env[key] = port
        elif key.endswith("_ADDR"):
            image_env[key] = f"0.0.0.0:{port}"
    env = {**os.environ, **image_env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["sh", "-c", command], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stderr) == (1, "")


def test_copied_sources_are_in_the_build_context(dockerfile):
    sources = [word for stage in dockerfile.stages.values() for value in stage.values("COPY")
               if "--from=" not in value for word in value.split()[:-1]]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert not dockerignored(source), f"{source} is copied but .dockerignore leaves it out"
    assert not dockerignored("services/ranker/main.py")
    for heavy in (".venv", "var", "tests", "bench", "services/ranker/__pycache__/main.cpython-311.pyc"):
        assert dockerignored(heavy), f"{heavy} goes into the build context"
