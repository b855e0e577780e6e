"""deploy/k8s: valid against the Kubernetes schemas (kubernetes-validate, offline, strict), probes
that mean something, and images, ports and user that agree with the Dockerfile.

No cluster runs here: the manifests are validated and cross-checked, not applied."""
from __future__ import annotations

import kubernetes_validate
import pytest

from services.common.grpc_server import LIVENESS

# gRPC probes are GA from 1.27; the newest schemas bundled with kubernetes-validate as well.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_are_valid_kubernetes_objects(manifests, version):
    assert manifests
    for (kind, name), doc in manifests.items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{name} against {version}: {exc.message} at {list(exc.path)}")


def _container(manifests, name: str) -> dict:
    deployment = manifests[("Deployment", name)]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _port(container: dict, port) -> int:
    """A probe's port (a number or a containerPort's name) as a number."""
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    return named[port] if isinstance(port, str) else port


def test_features_probes_are_its_health_endpoints_on_the_metrics_port(manifests):
    container = _container(manifests, "features")
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert ready["path"] == "/healthz/ready"  # not /metrics: it answers before any partition is assigned
    assert live["path"] == "/healthz/live"
    metrics_port = int(_env(container)["SHOPSTREAM_FEATURES_METRICS_PORT"])
    assert _port(container, ready["port"]) == _port(container, live["port"]) == metrics_port


@pytest.mark.parametrize("name", ["ranker", "gateway"])
def test_grpc_services_are_ready_by_grpc_health(manifests, name):
    container = _container(manifests, name)
    addr_port = int(_env(container)[f"SHOPSTREAM_{name.upper()}_ADDR"].rpartition(":")[2])
    grpc_probe = container["readinessProbe"]["grpc"]
    assert grpc_probe["port"] == addr_port == _port(container, "grpc")
    assert grpc_probe.get("service", "") == ""  # the server's overall status
    # NOT_SERVING (no model yet, Redis down) is not a reason to restart: liveness asks the
    # always-SERVING "liveness" name, which only a wedged or dead server fails.
    live = container["livenessProbe"]["grpc"]
    assert live["port"] == addr_port and live["service"] == LIVENESS


@pytest.mark.parametrize("name", ["features", "ranker", "gateway"])
def test_deployments_run_the_dockerfile_targets_as_its_user(manifests, dockerfile, name):
    deployment = manifests[("Deployment", name)]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(manifests, name)
    repository = container["image"].rsplit(":", 1)[0]
    assert repository == f"shopstream-{name}" and name in dockerfile.stages
    assert container["args"] == dockerfile.exec_form(name, "CMD")
    uid = dockerfile.last(name, "USER").split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == uid
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests[("Service", name)]["spec"]["selector"].items() <= labels.items()
