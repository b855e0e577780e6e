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
def test_manifests_are_valid_kubernetes_objects(manifests, custom_resources, version):
    assert manifests
    skipped = []
    for (kind, name), doc in manifests.items():
        if (kind, name) in custom_resources:
            skipped.append(f"{kind}/{name} ({custom_resources[kind, name]})")
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{name} against {version}: {exc.message} at {list(exc.path)}")
    print(f"not schema-validated, custom resources whose CRD schema kubernetes-validate lacks: {skipped}")


def test_custom_resources_are_skipped_with_a_reason(manifests, custom_resources):
    """Each custom resource is one of a named operator's, and schema validation is skipped for it
    (reported as a skip, so the run says so), not silently passed."""
    customs = {key: manifests[key] for key in custom_resources}
    assert {kind for kind, _ in customs} == {"Kafka", "KafkaNodePool", "KafkaTopic", "RedisCluster"}
    for (kind, name), doc in customs.items():
        assert doc.get("spec"), f"{kind}/{name} has no spec"
        with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    pytest.skip(f"{len(customs)} custom resources not schema-validated: their CRDs (Strimzi, "
                "OT-Container-Kit redis-operator) are not bundled with kubernetes-validate; "
                "tests/unit/deploy/test_k8s_scale.py checks how they are wired")


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
    # The gRPC port speaks TLS, which the kubelet's gRPC probes cannot: they ask the plaintext
    # health-only port (HEALTH_ADDR), which shares the server's health servicer.
    health_port = int(_env(container)[f"SHOPSTREAM_{name.upper()}_HEALTH_ADDR"].rpartition(":")[2])
    grpc_probe = container["readinessProbe"]["grpc"]
    assert grpc_probe["port"] == health_port == _port(container, "health")
    assert grpc_probe.get("service", "") == ""  # the server's overall status
    # NOT_SERVING (no model yet, Redis down) is not a reason to restart: liveness asks the
    # always-SERVING "liveness" name, which only a wedged or dead server fails.
    live = container["livenessProbe"]["grpc"]
    assert live["port"] == health_port and live["service"] == LIVENESS


@pytest.mark.parametrize("name", ["ranker", "gateway"])
def test_bind_addresses_are_explicit_where_the_pod_needs_them(manifests, name):
    # The services' defaults are loopback (docs/security.md): a pod says 0.0.0.0 for what
    # other pods (the gateway, Prometheus, the kubelet) must reach.
    env = _env(_container(manifests, name))
    prefix = f"SHOPSTREAM_{name.upper()}_"
    assert env[prefix + "ADDR"].startswith("0.0.0.0:") and env[prefix + "HEALTH_ADDR"].startswith("0.0.0.0:")
    assert env[prefix + "METRICS_HOST"] == "0.0.0.0"
    assert "SHOPSTREAM_GATEWAY_AUTH" not in env  # authentication stays on in a deployment


def test_the_features_metrics_port_is_bound_explicitly(manifests):
    assert _env(_container(manifests, "features"))["SHOPSTREAM_FEATURES_METRICS_HOST"] == "0.0.0.0"


def _secret_file(manifests, name: str, path: str) -> tuple[str, str]:
    """(Secret name, key) that the file at ``path`` in ``name``'s container comes from."""
    deployment = manifests[("Deployment", name)]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
    for mount in _container(manifests, name).get("volumeMounts", []):
        directory = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(directory):
            assert mount.get("readOnly") is True, f"{mount['name']} is mounted writable"
            secret = volumes[mount["name"]].get("secret")
            assert secret is not None, f"{path} is not on a Secret volume"
            return secret["secretName"], path[len(directory):]
    pytest.fail(f"{name}: nothing is mounted at {path}")


@pytest.mark.parametrize("name, files", [
    ("gateway", ["TOKENS_FILE", "TLS_CERT_FILE", "TLS_KEY_FILE", "RANKER_TLS_CA_FILE", "RANKER_TLS_CERT_FILE",
                 "RANKER_TLS_KEY_FILE"]),
    ("ranker", ["TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE"]),  # a client CA: mutual TLS
])
def test_tokens_and_tls_material_are_files_from_secrets(manifests, name, files):
    env = _env(_container(manifests, name))
    for setting in files:
        secret_name, key = _secret_file(manifests, name, env[f"SHOPSTREAM_{name.upper()}_{setting}"])
        secret = manifests[("Secret", secret_name)]
        assert key in {**secret.get("data", {}), **secret.get("stringData", {})}, f"{secret_name} has no {key}"


def _ingress_rules(manifests, name: str) -> list[dict]:
    policy = manifests[("NetworkPolicy", name)]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    return policy["spec"]["ingress"]


def _sources(manifests, name: str, port: int) -> list:
    """Who may reach ``name``'s ``port``: each rule's ``from`` (None: anyone)."""
    return [rule.get("from") for rule in _ingress_rules(manifests, name)
            if any(p["port"] == port for p in rule["ports"])]


PROMETHEUS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]


def test_only_the_gateway_reaches_the_ranker_and_only_prometheus_the_metrics(manifests):
    ranker = _container(manifests, "ranker")
    assert _sources(manifests, "ranker", _port(ranker, "grpc")) == [
        [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}]]
    assert manifests[("Deployment", "gateway")]["spec"]["template"]["metadata"]["labels"][
        "app.kubernetes.io/name"] == "gateway"
    gateway = _container(manifests, "gateway")
    assert _sources(manifests, "gateway", _port(gateway, "grpc")) == [None]  # the public API
    for name in ("features", "ranker", "gateway"):
        assert _sources(manifests, name, _port(_container(manifests, name), "metrics")) == [PROMETHEUS], name
        # nothing else is open: every rule's port is one of the above
        opened = {p["port"] for rule in _ingress_rules(manifests, name) for p in rule["ports"]}
        wanted = {_port(_container(manifests, name), "metrics")}
        if name != "features":
            wanted.add(_port(_container(manifests, name), "grpc"))
        assert opened == wanted, name


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
