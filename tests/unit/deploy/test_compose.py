"""deploy/compose/docker-compose.yml builds every shopstream image from the Dockerfile.

No container engine runs here: the file is parsed with PyYAML and checked against the
Dockerfile's stages, not run."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
COMPOSE_DIR = REPO / "deploy" / "compose"


def _shopstream_services(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items()
            if svc.get("build") or str(svc.get("image", "")).startswith("shopstream")}


def test_every_shopstream_service_is_built_from_a_dockerfile_target(compose, dockerfile):
    services = _shopstream_services(compose)
    assert {"features", "ranker", "gateway", "trainer"} <= set(services)
    for name, svc in services.items():
        build = svc.get("build")
        assert isinstance(build, dict), f"{name} names an image but no build"
        # The repository's Dockerfile, with the repository as the build context.
        assert (COMPOSE_DIR / build["context"]).resolve() == REPO, name
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile", name
        assert build["target"] == name and name in dockerfile.stages, name


def test_what_services_wait_for_has_a_health_check(compose, dockerfile):
    """``condition: service_healthy`` needs a health check: in the compose file or in the image."""
    services = compose["services"]
    for name, svc in services.items():
        for dependency, condition in (svc.get("depends_on") or {}).items():
            if condition.get("condition") != "service_healthy":
                continue
            target = services[dependency]
            build = target.get("build") or {}
            has_check = "healthcheck" in target or (
                build.get("target") and dockerfile.last(build["target"], "HEALTHCHECK"))
            assert has_check, f"{name} waits for {dependency} to be healthy, which has no health check"


def test_serving_services_keep_the_images_command_and_grace(compose):
    for name in ("features", "ranker", "gateway"):
        svc = compose["services"][name]
        assert "command" not in svc, f"{name}: the image's CMD (shopstream {name}) is the command"
        assert "stop_grace_period" in svc, f"{name}: SIGTERM needs time for the graceful shutdown"
