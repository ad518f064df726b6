"""deploy/kubernetes: every manifest against the Kubernetes schemas (strict, offline), the
KEDA objects and the kustomization against schemas kept in tests/deploy/schemas, and the
references between them (names, labels, Secrets, the queue KEDA watches).
"""

from __future__ import annotations

import copy
import json
import secrets
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from config import defaults
from config.destinations import parse_destinations
from config.settings import load_settings
from tests.deploy.helpers import (
    DEPLOY,
    IMAGE_UID,
    LONGEST_TASK_SECONDS,
    REPO,
    ROUTING_KEY_SHAPE,
    parse_cli,
    read_env_file,
    settings_variables,
)

K8S = DEPLOY / "kubernetes"
SCHEMAS = Path(__file__).with_name("schemas")
# The Kubernetes version the manifests are validated against (schemas shipped offline by
# kubernetes-validate). Raise it deliberately, when the clusters move.
KUBERNETES_VERSION = "1.30.0"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.schema.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication.schema.json",
}


def load(name: str) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")) if d]
    assert len(documents) == 1, f"{name}: one object per file"
    return documents[0]


def kustomization() -> dict[str, Any]:
    return load("kustomization.yaml")


def manifests() -> dict[str, dict[str, Any]]:
    return {name: load(name) for name in kustomization()["resources"]}


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests().values() if m["kind"] == kind}


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


def validate(document: dict[str, Any]) -> None:
    """Kubernetes' own schemas in strict mode, or ours for the KEDA kinds."""
    key = (document["apiVersion"], document["kind"])
    if key in CRD_SCHEMAS:
        jsonschema.validate(document, schema(CRD_SCHEMAS[key]))
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_and_nothing_missing() -> None:
    jsonschema.validate(kustomization(), schema("kustomization.schema.json"))
    listed = kustomization()["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert not list(K8S.glob("*.yml")), "use .yaml"


@pytest.mark.parametrize("name", sorted(
    p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_manifest_is_valid_in_strict_mode(name: str) -> None:
    validate(load(name))


@pytest.mark.parametrize(("name", "path", "typo"), [
    ("worker-deployment.yaml", ["spec", "template", "spec"], "terminationGracePeriod"),
    ("worker-deployment.yaml", ["spec", "template", "spec", "containers", 0], "livenesProbe"),
    ("worker-pdb.yaml", ["spec"], "minAvailible"),
    ("worker-scaledobject.yaml", ["spec"], "maxReplicas"),
    ("worker-scaledobject.yaml", ["spec", "triggers", 0, "metadata"], "listname"),
    ("keda-triggerauthentication.yaml", ["spec", "secretTargetRef", 0], "secret"),
])
def test_strict_validation_refuses_an_unknown_field(name: str, path: list[Any],
                                                    typo: str) -> None:
    """The validation above can fail: a misspelt field is an error, not ignored."""
    document = copy.deepcopy(load(name))
    node: Any = document
    for step in path:
        node = node[step]
    node[typo] = "1"
    with pytest.raises(jsonschema.ValidationError):
        validate(document)


def test_kustomization_is_refused_with_an_unknown_field() -> None:
    broken = dict(kustomization(), resource=["x.yaml"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema("kustomization.schema.json"))


def worker() -> dict[str, Any]:
    return by_kind("Deployment")["monitao-pd-worker"]


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def test_worker_terminates_gracefully_after_its_longest_task() -> None:
    grace = pod(worker())["terminationGracePeriodSeconds"]
    assert grace > LONGEST_TASK_SECONDS
    assert worker()["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_probes_run_the_health_command_within_their_timeout() -> None:
    container = pod(worker())["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        spec = container[probe]
        context = parse_cli(spec["exec"]["command"])
        assert context.info_name == "health" and context.params["local"] is True
        assert spec["timeoutSeconds"] > context.params["timeout"] + 3
    assert parse_cli(container["args"]).info_name == "worker"


def test_every_container_has_requests_limits_and_runs_unprivileged() -> None:
    for name, deployment in by_kind("Deployment").items():
        spec = pod(deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == IMAGE_UID, name
        for container in spec["containers"]:
            resources = container["resources"]
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[part]), (name, part)
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            image = container["image"].split(":")[0]
            assert image in {i["name"] for i in kustomization()["images"]}, name


def test_selectors_match_their_pods() -> None:
    deployments = by_kind("Deployment")
    for deployment in deployments.values():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    [pdb] = by_kind("PodDisruptionBudget").values()
    assert pdb["spec"]["selector"]["matchLabels"] == worker()["spec"]["selector"]["matchLabels"]
    [service] = by_kind("Service").values()
    flower = deployments["monitao-pd-flower"]
    assert service["spec"]["selector"] == flower["spec"]["selector"]["matchLabels"]
    ports = {p["name"] for p in pod(flower)["containers"][0]["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    for probe in ("readinessProbe", "livenessProbe"):
        get = pod(flower)["containers"][0][probe]["httpGet"]
        assert get["path"] == "/healthcheck" and get["port"] in ports
    assert parse_cli(pod(flower)["containers"][0]["args"]).info_name == "flower"


def generated_secrets() -> dict[str, set[str]]:
    """Secret name -> keys, from the secretGenerator and each file's committed example."""
    result = {}
    for generator in kustomization()["secretGenerator"]:
        keys: set[str] = set()
        for env_file in generator["envs"]:
            keys |= set(read_env_file(K8S / (env_file + ".example")))
        result[generator["name"]] = keys
    return result


def test_secrets_come_from_ignored_files_with_committed_examples() -> None:
    for generator in kustomization()["secretGenerator"]:
        for env_file in generator["envs"]:
            example = K8S / (env_file + ".example")
            assert example.is_file(), example
            for name, value in read_env_file(example).items():
                # Placeholders only (a user name is no secret).
                assert "REPLACE_ME" in value or name.endswith("_USER"), (example.name, name)
            ignored = subprocess.run(["git", "check-ignore", "-q", str(K8S / env_file)],
                                     cwd=REPO, timeout=30)
            assert ignored.returncode == 0, f"{env_file} is not git-ignored"
    # No Secret manifest is committed among the resources.
    assert not by_kind("Secret")


def test_every_reference_resolves() -> None:
    config_maps = by_kind("ConfigMap")
    generated = generated_secrets()
    for name, deployment in by_kind("Deployment").items():
        spec = pod(deployment)
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, name
                else:
                    assert source["secretRef"]["name"] in generated, name
            for variable in container.get("env", []):
                ref = variable["valueFrom"]["secretKeyRef"]
                assert ref["key"] in generated[ref["name"]], (name, ref)
                assert variable["name"] in settings_variables()
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
    [auth] = by_kind("TriggerAuthentication").values()
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in generated[ref["name"]], ref


def test_keda_scales_the_worker_on_the_fleets_queue() -> None:
    [scaled] = by_kind("ScaledObject").values()
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1", "Deployment", worker()["metadata"]["name"])
    [pdb] = by_kind("PodDisruptionBudget").values()
    assert spec["minReplicaCount"] > pdb["spec"]["minAvailable"]  # a drain can proceed
    assert spec["maxReplicaCount"] > spec["minReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "redis"
    metadata = trigger["metadata"]
    settings = by_kind("ConfigMap")["monitao-pd-settings"]["data"]
    # Every broker key is under the prefix, the Celery queue included.
    assert metadata["listName"] == settings["MONITAO_PD_KEY_PREFIX"] + defaults.QUEUE_NAME
    assert int(metadata["listLength"]) >= int(settings["MONITAO_PD_WORKER_CONCURRENCY"])
    # The same Redis as the workers' URL (the example of the Secret's file).
    url = urlsplit(read_env_file(K8S / "secrets" / "redis.env.example")["MONITAO_PD_REDIS_URL"])
    assert metadata["address"] == f"{url.hostname}:{url.port}"
    assert metadata["databaseIndex"] == url.path.strip("/")
    assert metadata["enableTLS"] == ("true" if url.scheme == "rediss" else "false")
    [auth] = by_kind("TriggerAuthentication").values()
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"password"}


def test_settings_configmap_holds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    data = by_kind("ConfigMap")["monitao-pd-settings"]["data"]
    assert set(data) <= settings_variables()
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert str(settings.config) == "/etc/monitao-pd/destinations.toml"
    mount = next(m for m in pod(worker())["containers"][0]["volumeMounts"]
                 if m["name"] == "destinations")
    assert str(settings.config.parent) == mount["mountPath"]
    assert settings.visibility_timeout > LONGEST_TASK_SECONDS


def test_worker_pods_serve_metrics_where_prometheus_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in by_kind("ConfigMap")["monitao-pd-settings"]["data"].items():
        monkeypatch.setenv(name, value)
    port = load_settings().metrics_port
    template = worker()["spec"]["template"]
    [container_port] = [p for p in pod(worker())["containers"][0]["ports"]
                        if p["name"] == "metrics"]
    assert port > 0 and container_port["containerPort"] == port
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/scrape"] == "true"


def test_destinations_configmap_is_a_valid_destinations_file() -> None:
    toml = by_kind("ConfigMap")["monitao-pd-destinations"]["data"]["destinations.toml"]
    document = tomllib.loads(toml)
    keys = generated_secrets()["monitao-pd-routing-keys"]
    environ = {name: secrets.token_hex(16) for name in keys}
    destinations = parse_destinations(document, environ=environ)
    assert {d.routing_key_env for d in destinations.values()} == keys
    assert not ROUTING_KEY_SHAPE.search(toml)


def test_no_routing_key_anywhere_in_the_folder() -> None:
    for path in K8S.rglob("*"):
        if path.is_file():
            assert not ROUTING_KEY_SHAPE.search(path.read_text(encoding="utf-8")), path
