"""deploy/k8s as a whole: every object a manifest refers to is defined in deploy/k8s or is a
custom resource of a named operator; every pod asks for resources and has probes; the gRPC
tiers autoscale; every tier has a disruption budget; the partitions bound the workers. And
the compose files: a real Kafka image, Redis, the trainer job before the services.

No cluster or container engine runs here: these are cross-checks of the files."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DEPLOYMENTS = ("features", "ranker", "gateway")


def _pod_specs(manifests) -> dict[str, dict]:
    """Every pod template: Deployments' and the CronJob's, by the owner's kind/name."""
    out = {}
    for (kind, name), doc in manifests.items():
        if kind == "Deployment":
            out[f"{kind}/{name}"] = doc["spec"]["template"]["spec"]
        elif kind == "CronJob":
            out[f"{kind}/{name}"] = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return out


def _containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def test_every_referenced_object_is_defined(manifests):
    missing = []
    for owner, pod in _pod_specs(manifests).items():
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if ("PersistentVolumeClaim", claim) not in manifests:
                    missing.append(f"{owner}: PersistentVolumeClaim/{claim}")
            if "secret" in volume and ("Secret", volume["secret"]["secretName"]) not in manifests:
                missing.append(f"{owner}: Secret/{volume['secret']['secretName']}")
            if "configMap" in volume and ("ConfigMap", volume["configMap"]["name"]) not in manifests:
                missing.append(f"{owner}: ConfigMap/{volume['configMap']['name']}")
        for container in _containers(pod):
            for source in container.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in source and (kind, source[key]["name"]) not in manifests:
                        missing.append(f"{owner}: {kind}/{source[key]['name']}")
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key in ref:
                        doc = manifests.get((kind, ref[key]["name"]))
                        if doc is None or ref[key]["key"] not in {**doc.get("data", {}), **doc.get("stringData", {})}:
                            missing.append(f"{owner}: {kind}/{ref[key]['name']} key {ref[key]['key']}")
    for (kind, name), doc in manifests.items():
        if kind == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            if (target["kind"], target["name"]) not in manifests:
                missing.append(f"HPA/{name}: {target['kind']}/{target['name']}")
    assert not missing, f"referenced but not defined: {missing}"


def _strimzi_bootstrap(manifests) -> set[str]:
    return {f"{name}-kafka-bootstrap" for (kind, name) in manifests if kind == "Kafka"}


def _redis_cluster_services(manifests) -> set[str]:
    return {f"{name}-leader" for (kind, name) in manifests if kind == "RedisCluster"}


def test_kafka_and_redis_addresses_name_services_their_operators_create(manifests):
    kafka = manifests[("ConfigMap", "shopstream-infra")]["data"]["KAFKA_BOOTSTRAP_SERVERS"]
    hosts = {server.rsplit(":", 1)[0] for server in kafka.split(",")}
    assert hosts and hosts <= _strimzi_bootstrap(manifests), f"{hosts}: no Strimzi Kafka creates them"
    url = manifests[("Secret", "shopstream-redis")]["stringData"]["url"]
    parts = urlsplit(url)
    assert parts.scheme == "redis+cluster"
    assert parts.hostname in _redis_cluster_services(manifests), f"{parts.hostname}: no RedisCluster creates it"
    # The operator's password and the URL's are one secret's two keys.
    cluster = manifests[("RedisCluster", "redis-cluster")]
    assert cluster["spec"]["kubernetesConfig"]["redisSecret"] == {"name": "shopstream-redis", "key": "password"}
    assert cluster["spec"]["redisLeader"]["replicas"] >= 3  # a Redis Cluster needs three masters


def test_the_gateway_balances_over_the_rankers_headless_service(manifests):
    gateway = manifests[("Deployment", "gateway")]["spec"]["template"]["spec"]["containers"][0]
    addr = next(e["value"] for e in gateway["env"] if e["name"] == "SHOPSTREAM_GATEWAY_RANKER_ADDR")
    assert addr.startswith("dns:///ranker.")  # resolves every ranker pod; round_robin per call
    assert manifests[("Service", "ranker")]["spec"]["clusterIP"] == "None"


BUILT_IN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io"}


def test_custom_resources_belong_to_the_named_operators(manifests, custom_resources):
    for (kind, name), doc in manifests.items():
        group = doc["apiVersion"].rpartition("/")[0]
        assert group in BUILT_IN_GROUPS or (kind, name) in custom_resources, f"{kind}/{name}: no operator named"
        if doc["apiVersion"].startswith("kafka.strimzi.io/") and kind in ("KafkaTopic", "KafkaNodePool"):
            assert doc["metadata"]["labels"]["strimzi.io/cluster"] in {n for k, n in manifests if k == "Kafka"}


@pytest.mark.parametrize("owner", ["Deployment/features", "Deployment/ranker", "Deployment/gateway",
                                   "CronJob/trainer"])
def test_every_container_requests_cpu_and_memory(manifests, owner):
    for container in _containers(_pod_specs(manifests)[owner]):
        requests = container.get("resources", {}).get("requests", {})
        assert {"cpu", "memory"} <= set(requests), f"{owner}/{container['name']}: requests {requests}"
        assert "memory" in container["resources"].get("limits", {}), f"{owner}: no memory limit"


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_every_server_has_readiness_and_liveness_probes(manifests, name):
    (container,) = manifests[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
    assert container.get("readinessProbe") and container.get("livenessProbe")
    # Readiness and liveness ask different questions (test_k8s checks what each asks).
    assert container["readinessProbe"] != container["livenessProbe"]


def test_gateway_and_ranker_autoscale_and_every_tier_has_a_disruption_budget(manifests):
    hpa = {doc["spec"]["scaleTargetRef"]["name"]: doc for (kind, _), doc in manifests.items()
           if kind == "HorizontalPodAutoscaler"}
    assert set(hpa) == {"gateway", "ranker"}
    for name, doc in hpa.items():
        deployment = manifests[("Deployment", name)]
        assert doc["spec"]["minReplicas"] >= 2 and doc["spec"]["maxReplicas"] > doc["spec"]["minReplicas"]
        assert doc["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= doc["spec"]["maxReplicas"]
        # CPU utilisation needs CPU requests to be measured against.
        assert any(m["resource"]["name"] == "cpu" for m in doc["spec"]["metrics"])
    budgets = [doc for (kind, _), doc in manifests.items() if kind == "PodDisruptionBudget"]
    for name in DEPLOYMENTS:
        labels = manifests[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, f"{name}: {len(covering)} disruption budgets"
        budget = covering[0]["spec"]
        assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable", 0) >= 1


def test_partitions_bound_the_features_workers(manifests):
    features = manifests[("Deployment", "features")]
    (container,) = features["spec"]["template"]["spec"]["containers"]
    partitions = int(next(e["value"] for e in container["env"] if e["name"] == "SHOPSTREAM_FEATURES_TOPIC_PARTITIONS"))
    topics = {doc["spec"]["topicName"]: doc["spec"]["partitions"] for (kind, _), doc in manifests.items()
              if kind == "KafkaTopic"}
    assert set(topics) == {"shopstream.events.v1", "shopstream.catalog.v1", "shopstream.events.dlq.v1",
                           "shopstream.impressions.v1"}
    assert set(topics.values()) == {partitions}  # co-partitioned, as ensure_topics creates them
    assert features["spec"]["replicas"] <= partitions  # a worker beyond the partitions sits idle


def test_the_models_volume_is_shared_and_written_by_the_trainer_only(manifests):
    claim = manifests[("PersistentVolumeClaim", "shopstream-models")]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # many readers on many nodes, one writer
    for owner, pod in _pod_specs(manifests).items():
        models = [v for v in pod.get("volumes", []) if v.get("persistentVolumeClaim", {}).get("claimName")
                  == "shopstream-models"]
        if not models:
            continue
        mounts = [m for c in pod["containers"] for m in c.get("volumeMounts", []) if m["name"] == models[0]["name"]]
        writable = owner == "CronJob/trainer"
        assert all(m.get("readOnly", False) is not writable for m in mounts), owner
    trainer = _pod_specs(manifests)["CronJob/trainer"]["containers"][0]
    assert trainer["image"].rsplit(":", 1)[0] == "shopstream-trainer"


# -- compose ---------------------------------------------------------------------------------


class _ComposeLoader(yaml.SafeLoader):
    """Compose's ``!override`` / ``!reset`` tags, read as the plain values they carry."""


_ComposeLoader.add_constructor("!override", lambda loader, node: loader.construct_mapping(node, deep=True)
                               if isinstance(node, yaml.MappingNode) else loader.construct_sequence(node, deep=True))
_ComposeLoader.add_constructor("!reset", lambda loader, node: None)


def test_compose_starts_real_kafka_redis_and_the_trainer_job_before_the_services(compose):
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:3.")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert services["redis"]["image"].startswith("valkey/valkey:")
    assert "profiles" not in services["trainer"]  # `up` runs it
    for name in ("features", "ranker"):
        assert services[name]["depends_on"]["trainer"] == {"condition": "service_completed_successfully"}
        assert "models:/models:ro" in services[name]["volumes"]
    assert "models:/models" in services["trainer"]["volumes"] and "models" in compose["volumes"]
    assert services["gateway"]["environment"]["SHOPSTREAM_GATEWAY_RANKER_ADDR"].startswith("dns:///ranker:")


def test_the_redis_cluster_override_replaces_redis_for_every_service(compose):
    override = yaml.load((REPO / "deploy" / "compose" / "docker-compose.redis-cluster.yml").read_text(),
                         Loader=_ComposeLoader)
    nodes = [name for name in override["services"] if name.startswith("redis-node-")]
    assert len(nodes) >= 6  # three masters with a replica each
    for name in nodes:
        command = override["services"][name]["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
    for name in ("features", "ranker", "gateway", "trainer"):
        assert name in compose["services"]
        assert override["services"][name]["environment"]["REDIS_URL"].startswith("redis+cluster://redis-node-")
    for name in ("features", "ranker", "gateway"):
        needs = override["services"][name]["depends_on"]
        assert "redis" not in needs and needs["redis-cluster-init"]["condition"] == "service_completed_successfully"
