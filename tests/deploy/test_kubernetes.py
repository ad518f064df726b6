"""deploy/kubernetes: every manifest against the Kubernetes schemas (strict, offline), the
KEDA objects and the kustomization against schemas kept in tests/deploy/schemas, and the
references between them (names, labels, Secrets, the queue KEDA watches).
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
import secrets
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import redis
import yaml

from config import defaults
from config.destinations import parse_destinations
from config.embedded_redis import free_port
from config.secrets import generate_key
from config.settings import load_settings
from tests.deploy.helpers import (
    DEPLOY,
    IMAGE_UID,
    LONGEST_TASK_SECONDS,
    REPO,
    ROUTING_KEY_SHAPE,
    cmdline,
    parse_cli,
    read_env_file,
    redis_started_by,
    script_environment,
    secret_settings,
    serve_and_probe,
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
    """The one object of a file (a copy: the tests may change it)."""
    return copy.deepcopy(_parsed(name))


@functools.cache
def _parsed(name: str) -> dict[str, Any]:
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


def workloads() -> dict[str, dict[str, Any]]:
    """Every Deployment and StatefulSet, by name."""
    return by_kind("Deployment") | by_kind("StatefulSet")


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
    # Each Service selects exactly one workload's pods and targets a port they name.
    for service in by_kind("Service").values():
        [target] = [w for w in workloads().values()
                    if w["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]]
        named = {p["name"] for c in pod(target)["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in named, service["metadata"]["name"]
    flower = deployments["monitao-pd-flower"]
    ports = {p["name"] for p in pod(flower)["containers"][0]["ports"]}
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


# --- who reaches whom: the NetworkPolicies ----------------------------------------------------

NAMESPACE = "monitao-pd"


@dataclass(frozen=True)
class Peer:
    """A pod that opens a connection: its namespace and labels."""

    namespace: str
    labels: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, namespace: str, **labels: str) -> Peer:
        return cls(namespace, tuple(sorted(labels.items())))


def fleet_pod(component: str) -> Peer:
    return Peer.of(NAMESPACE, **{"app.kubernetes.io/name": "monitao-pd",
                                 "app.kubernetes.io/component": component})


# Pods outside the fleet that the policies must tell apart.
PROMETHEUS = Peer.of("monitoring", **{"app.kubernetes.io/name": "prometheus"})
INGRESS = Peer.of("ingress-nginx", **{"app.kubernetes.io/name": "ingress-nginx"})
KEDA = Peer.of("keda", **{"app.kubernetes.io/name": "keda-operator"})
OUTSIDERS = {
    "a one-off pod in the namespace": Peer.of(NAMESPACE, run="debug"),
    "a simulator labelled as the fleet": fleet_pod("simulator"),
    "a pod of another namespace": Peer.of("default", app="other"),
    "a pod of another namespace labelled prometheus":
        Peer.of("default", **{"app.kubernetes.io/name": "prometheus"}),
    "a pod of another namespace labelled as a worker": Peer("default", fleet_pod("worker").labels),
}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector ({} selects everything)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        matched = {"In": key in labels and labels[key] in values,
                   "NotIn": key not in labels or labels[key] not in values,
                   "Exists": key in labels, "DoesNotExist": key not in labels}[operator]
        if not matched:
            return False
    return True


def peer_matches(rule_peer: dict[str, Any], source: Peer, policy_namespace: str) -> bool:
    assert "ipBlock" not in rule_peer, "pods are chosen by label, never by address"
    namespace_labels = {"kubernetes.io/metadata.name": source.namespace}
    if "namespaceSelector" in rule_peer:
        if not selects(rule_peer["namespaceSelector"], namespace_labels):
            return False
    elif source.namespace != policy_namespace:
        return False
    return selects(rule_peer.get("podSelector", {}), dict(source.labels))


def port_matches(rule_port: dict[str, Any], port: int, named: dict[str, int]) -> bool:
    if rule_port.get("protocol", "TCP") != "TCP":
        return False
    wanted = rule_port.get("port")
    return wanted is None or (named.get(wanted) if isinstance(wanted, str) else wanted) == port


def reachable(source: Peer, target: str, port: int,
              policies: list[dict[str, Any]] | None = None) -> bool:
    """Whether `source` may open a TCP connection to `port` of the workload `target`'s pods,
    by the NetworkPolicies of the kustomization (or `policies`), with Kubernetes' semantics: a
    pod that no policy selects takes anything; otherwise a rule of a policy selecting it must
    admit the source and the port."""
    workload = workloads()[target]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    named = {p["name"]: p["containerPort"] for c in pod(workload)["containers"]
             for p in c.get("ports", [])}
    if policies is None:
        policies = list(by_kind("NetworkPolicy").values())
    selecting = [p for p in policies
                 if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                 and selects(p["spec"]["podSelector"], labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from") or [{"namespaceSelector": {}}]
            ports = rule.get("ports") or [{}]
            if (any(peer_matches(p, source, NAMESPACE) for p in peers)
                    and any(port_matches(p, port, named) for p in ports)):
                return True
    return False


def container_port(target: str, name: str) -> int:
    [port] = [p["containerPort"] for c in pod(workloads()[target])["containers"]
              for p in c.get("ports", []) if p["name"] == name]
    return port


def redis_clients() -> set[str]:
    """Workloads whose containers are given MONITAO_PD_REDIS_URL: the ones that talk to Redis."""
    return {name for name, workload in workloads().items()
            for container in pod(workload)["containers"]
            if "MONITAO_PD_REDIS_URL" in {v["name"] for v in container.get("env", [])}}


def test_only_the_fleet_and_keda_reach_redis() -> None:
    assert redis_clients() == {"monitao-pd-worker", "monitao-pd-flower", "monitao-pd-webhooks",
                               "monitao-pd-api"}
    port = container_port("redis", "redis")
    for client in redis_clients():
        component = workloads()[client]["spec"]["template"]["metadata"]["labels"][
            "app.kubernetes.io/component"]
        assert reachable(fleet_pod(component), "redis", port), client
    assert reachable(KEDA, "redis", port)  # the ScaledObject reads the queue's length
    for name, outsider in {**OUTSIDERS, "Prometheus": PROMETHEUS,
                           "the ingress controller": INGRESS}.items():
        assert not reachable(outsider, "redis", port), name


def test_only_prometheus_reaches_the_metrics_ports() -> None:
    metrics = container_port("monitao-pd-worker", "metrics")
    assert reachable(PROMETHEUS, "monitao-pd-worker", metrics)
    for name, source in {**OUTSIDERS, "the ingress controller": INGRESS, "KEDA": KEDA,
                         "Flower": fleet_pod("flower"), "a worker": fleet_pod("worker"),
                         "the receiver": fleet_pod("webhooks"),
                         "the API": fleet_pod("api")}.items():
        assert not reachable(source, "monitao-pd-worker", metrics), name
    # The receiver serves /metrics on its one port: Prometheus, and PagerDuty through the
    # ingress controller, reach it; nothing else does.
    http = container_port("monitao-pd-webhooks", "http")
    assert reachable(PROMETHEUS, "monitao-pd-webhooks", http)
    assert reachable(INGRESS, "monitao-pd-webhooks", http)
    for name, source in OUTSIDERS.items():
        assert not reachable(source, "monitao-pd-webhooks", http), name


def test_flower_is_reached_through_the_ingress_controller_only() -> None:
    """Flower: a ClusterIP Service (no Ingress, no NodePort) that only the ingress controller
    may reach (port-forward works regardless); its own basic auth stays on."""
    http = container_port("monitao-pd-flower", "http")
    assert reachable(INGRESS, "monitao-pd-flower", http)
    for name, source in {**OUTSIDERS, "Prometheus": PROMETHEUS, "a worker":
                         fleet_pod("worker")}.items():
        assert not reachable(source, "monitao-pd-flower", http), name
    for service in by_kind("Service").values():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert not by_kind("Ingress")
    args = pod(by_kind("Deployment")["monitao-pd-flower"])["containers"][0]["args"]
    assert parse_cli(args).params["no_auth_on_localhost"] is False


def test_no_pod_of_the_namespace_takes_anything_else() -> None:
    """The default-deny policy: every other port of every workload is closed to everyone."""
    [deny] = [p for p in by_kind("NetworkPolicy").values() if p["spec"]["podSelector"] == {}]
    assert deny["spec"]["policyTypes"] == ["Ingress"] and not deny["spec"].get("ingress")
    sources = [*OUTSIDERS.values(), PROMETHEUS, INGRESS, KEDA,
               *(fleet_pod(c) for c in ("worker", "flower", "webhooks", "api", "redis"))]
    for target in workloads():
        for port in (22, 80, 443, 6380, 8080, 9000):
            for source in sources:
                assert not reachable(source, target, port), (target, port, source)


def test_the_policy_evaluation_can_fail() -> None:
    """The checks above can fail: without the policies every outsider reaches Redis, and
    with the default deny alone not even a worker does."""
    port = container_port("redis", "redis")
    for name, outsider in OUTSIDERS.items():
        assert reachable(outsider, "redis", port, policies=[]), name
    [deny] = [p for p in by_kind("NetworkPolicy").values() if p["spec"]["podSelector"] == {}]
    assert not reachable(fleet_pod("worker"), "redis", port, policies=[deny])
    assert reachable(fleet_pod("worker"), "redis", port)


# --- Redis: a password, from the Secret ---------------------------------------------------------


def redis_container() -> dict[str, Any]:
    [container] = pod(by_kind("StatefulSet")["redis"])["containers"]
    return container


def test_redis_is_durable_and_never_evicts() -> None:
    args = redis_container()["args"]
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--appendonly"] == "yes" and pairs["--appendfsync"] == "everysec"
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert pairs["--dir"] == "/data"
    mounts = {m["name"]: m["mountPath"] for m in redis_container()["volumeMounts"]}
    [claim] = by_kind("StatefulSet")["redis"]["spec"]["volumeClaimTemplates"]
    assert mounts[claim["metadata"]["name"]] == "/data"
    assert "env" not in redis_container() and "envFrom" not in redis_container()


def redis_password_mount() -> Path:
    """Where the Redis container reads its password, checked to be the Secret's `password`."""
    spec = pod(by_kind("StatefulSet")["redis"])
    [volume] = [v for v in spec["volumes"] if "secret" in v]
    secret = volume["secret"]
    [item] = secret["items"]
    assert item["key"] in generated_secrets()[secret["secretName"]]
    assert (secret["secretName"], item["key"]) == ("monitao-pd-redis", "password")
    [mount] = [m for m in redis_container()["volumeMounts"] if m["name"] == volume["name"]]
    return Path(mount["mountPath"]) / item["path"]


@pytest.mark.slow
def test_redis_requires_the_password_of_the_secret(tmp_path: Path) -> None:
    """The container's script, run with this machine's redis-server and the Secret's file."""
    mount = redis_password_mount()
    password = secrets.token_hex(32)
    (tmp_path / "password").write_text(password)
    command = redis_container()["command"]
    script = command[2].replace(str(mount), str(tmp_path / "password"))
    # Redis changes to --dir as it reads it: the data volume is a folder of the test's.
    args = [str(tmp_path) if arg == "/data" else arg for arg in redis_container()["args"]]
    with redis_started_by([*command[:2], script, *command[3:], *args], tmp_path) as server:
        anonymous = redis.Redis(port=server.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        client = redis.Redis(port=server.port, password=password)
        assert client.ping() is True
        client.close()
        assert password not in cmdline(server.pid)
        for probe in ("readinessProbe", "livenessProbe"):
            check = [part.replace(str(mount), str(tmp_path / "password")).replace(
                "redis-cli", f"redis-cli -p {server.port}")
                for part in redis_container()[probe]["exec"]["command"]]
            assert subprocess.run(check, capture_output=True, timeout=30).returncode == 0
            (tmp_path / "password").write_text("w" * 32)
            assert subprocess.run(check, capture_output=True, timeout=30).returncode != 0
            (tmp_path / "password").write_text(password)
    (tmp_path / "password").write_text("REPLACE_ME")
    refused = subprocess.run([*command[:2], script, *command[3:]], capture_output=True,
                             text=True, timeout=30, env=script_environment())
    assert refused.returncode == 2 and "at least 16 characters" in refused.stderr


def test_every_redis_client_gets_the_url_with_the_password_from_the_secret() -> None:
    example = read_env_file(K8S / "secrets" / "redis.env.example")
    url = urlsplit(example["MONITAO_PD_REDIS_URL"])
    # The URL's password is the one Redis requires; its host is the Redis Service.
    assert url.password == example["password"]
    [service] = [s for s in by_kind("Service").values() if s["metadata"]["name"] == "redis"]
    assert url.hostname == f"redis.{NAMESPACE}.svc.cluster.local"
    assert url.port == service["spec"]["ports"][0]["port"] == container_port("redis", "redis")
    for name in redis_clients():
        for container in pod(workloads()[name])["containers"]:
            [variable] = [v for v in container["env"] if v["name"] == "MONITAO_PD_REDIS_URL"]
            assert variable["valueFrom"]["secretKeyRef"] == {
                "name": "monitao-pd-redis", "key": "MONITAO_PD_REDIS_URL"}, name


# Who is given which Secret (envFrom): the routing keys to the workers only, the key ring
# to the workers (they open routing keys), the API (it seals them) and the receiver (it
# opens the subscriptions' secrets and REST tokens), Flower's credentials to Flower, the
# webhook secrets to the receiver.
SECRETS_OF = {
    "monitao-pd-worker": {"monitao-pd-routing-keys", "monitao-pd-secret-keys"},
    "monitao-pd-flower": {"monitao-pd-flower"},
    "monitao-pd-webhooks": {"monitao-pd-webhooks", "monitao-pd-secret-keys"},
    "monitao-pd-api": {"monitao-pd-secret-keys"},
}


def test_each_workload_is_given_only_the_secrets_it_needs() -> None:
    assert set(generated_secrets()["monitao-pd-secret-keys"]) == {"MONITAO_PD_SECRET_KEYS"}
    assert set(generated_secrets()["monitao-pd-webhooks"]) == {"MONITAO_PD_WEBHOOK_SECRETS"}
    for name, deployment in by_kind("Deployment").items():
        given = {source["secretRef"]["name"] for container in pod(deployment)["containers"]
                 for source in container.get("envFrom", []) if "secretRef" in source}
        assert given == SECRETS_OF[name], name
    # Every secret setting some Deployment needs reaches it from a Secret, none from a
    # ConfigMap; the settings ConfigMap carries none.
    settings = by_kind("ConfigMap")["monitao-pd-settings"]["data"]
    assert not set(settings) & secret_settings()
    for config_map in by_kind("ConfigMap").values():
        for value in config_map["data"].values():
            assert not re.search(r"://[^/\s]*@", value), "a URL with credentials in a ConfigMap"


def test_kustomize_puts_every_secret_value_in_a_secret_only(tmp_path: Path) -> None:
    """`kubectl kustomize` on a copy with every secret file filled in: each value is found in
    a Secret of the output, and nowhere else."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed on this machine")
    copy_dir = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy_dir, ignore=shutil.ignore_patterns("*.env"))
    values: dict[str, str] = {}
    for example in (copy_dir / "secrets").glob("*.example"):
        lines = []
        for name in read_env_file(example):
            values[name] = f"sentinel{secrets.token_hex(12)}"
            lines.append(f"{name}={values[name]}")
        example.with_suffix("").write_text("\n".join(lines) + "\n")
    done = subprocess.run([kubectl, "kustomize", str(copy_dir)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    objects = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert {o["kind"] for o in objects} >= {"NetworkPolicy", "StatefulSet", "Secret"}
    in_secrets: set[str] = set()
    for document in objects:
        if document["kind"] == "Secret":
            for encoded in document["data"].values():
                in_secrets.add(base64.b64decode(encoded).decode())
        else:
            text = yaml.safe_dump(document)
            assert "sentinel" not in text, document["metadata"]["name"]
    assert set(values.values()) <= in_secrets


# --- the webhook receiver ------------------------------------------------------------------------


def webhooks() -> dict[str, Any]:
    return by_kind("Deployment")["monitao-pd-webhooks"]


def container_environment(deployment: dict[str, Any], **given: str) -> dict[str, str]:
    """The container's environment as the Deployment builds it: the ConfigMaps' data, each
    Secret's keys with a fresh value (or one from `given`), then `given` over everything."""
    [container] = pod(deployment)["containers"]
    config_maps = by_kind("ConfigMap")
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment |= config_maps[source["configMapRef"]["name"]]["data"]
        else:
            environment |= {key: secrets.token_hex(16)
                            for key in generated_secrets()[source["secretRef"]["name"]]}
    for variable in container.get("env", []):
        environment[variable["name"]] = secrets.token_hex(16)
    return environment | given


def test_the_webhook_receiver_is_deployed_with_its_secret_and_probes() -> None:
    deployment = webhooks()
    [container] = pod(deployment)["containers"]
    context = parse_cli(container["args"])
    assert context.info_name == "webhooks" and context.params["host"] == "0.0.0.0"
    assert container_port("monitao-pd-webhooks", "http") == context.params["port"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == "http" and get["path"] == "/healthz"
        assert container[probe]["timeoutSeconds"] >= 1
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(context.params["port"])
    [service] = [s for s in by_kind("Service").values()
                 if s["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.slow
def test_the_probes_ask_the_real_receiver(redis_url: str, prefix: str) -> None:
    """`monitao-pd webhooks` run with the Deployment's arguments (on 127.0.0.1 and a free
    port) and its environment: the probes' path answers 200 once it serves, another 404."""
    [container] = pod(webhooks())["containers"]
    port = free_port()
    args = container["args"]
    args = [*args[:args.index("--host")], "--host", "127.0.0.1", "--port", str(port)]
    environment = script_environment() | container_environment(
        webhooks(), MONITAO_PD_REDIS_URL=redis_url, MONITAO_PD_KEY_PREFIX=prefix,
        MONITAO_PD_SECRET_KEYS=generate_key())
    paths = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
    serve_and_probe(args, environment, port, paths, "the receiver")


# --- the HTTP API ------------------------------------------------------------------------------


def api() -> dict[str, Any]:
    return by_kind("Deployment")["monitao-pd-api"]


def test_the_api_is_deployed_with_the_key_ring_and_probes_on_healthz() -> None:
    deployment = api()
    [container] = pod(deployment)["containers"]
    context = parse_cli(container["args"])
    assert context.info_name == "api" and context.params["host"] == "0.0.0.0"
    assert container_port("monitao-pd-api", "http") == context.params["port"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == "http" and get["path"] == "/healthz"
        assert container[probe]["timeoutSeconds"] >= 1
    # a send test may take its longest timeout; the grace period lets it finish
    assert (pod(deployment)["terminationGracePeriodSeconds"]
            > defaults.API_SEND_TEST_MAX_TIMEOUT_SECONDS)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(context.params["port"])
    [service] = [s for s in by_kind("Service").values()
                 if s["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    # the destinations file at the path the settings give, as for the workers
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    settings = by_kind("ConfigMap")["monitao-pd-settings"]["data"]
    assert str(Path(settings["MONITAO_PD_CONFIG"]).parent) == mounts["destinations"]


def test_the_api_is_reached_by_the_ingress_controller_and_prometheus_only() -> None:
    http = container_port("monitao-pd-api", "http")
    assert reachable(INGRESS, "monitao-pd-api", http)
    assert reachable(PROMETHEUS, "monitao-pd-api", http)  # /metrics shares the port
    for name, source in {**OUTSIDERS, "KEDA": KEDA, "a worker": fleet_pod("worker"),
                         "Flower": fleet_pod("flower"),
                         "the receiver": fleet_pod("webhooks")}.items():
        assert not reachable(source, "monitao-pd-api", http), name
    # and the API reaches Redis (its policy admits the component)
    assert reachable(fleet_pod("api"), "redis", container_port("redis", "redis"))


@pytest.mark.slow
def test_the_apis_probes_ask_the_real_api(redis_url: str, prefix: str, tmp_path: Path) -> None:
    """`monitao-pd api` run with the Deployment's arguments (on 127.0.0.1 and a free port)
    and its environment (the ConfigMaps' settings and destinations file, a real key ring in
    the Secret's variable): the probes' path answers 200 once it serves, another 404."""
    [container] = pod(api())["containers"]
    port = free_port()
    args = container["args"]
    args = [*args[:args.index("--host")], "--host", "127.0.0.1", "--port", str(port)]
    config = tmp_path / "destinations.toml"
    config.write_text(by_kind("ConfigMap")["monitao-pd-destinations"]["data"][
        "destinations.toml"])
    environment = script_environment() | container_environment(
        api(), MONITAO_PD_REDIS_URL=redis_url, MONITAO_PD_KEY_PREFIX=prefix,
        MONITAO_PD_CONFIG=str(config), MONITAO_PD_SECRET_KEYS=generate_key())
    paths = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
    serve_and_probe(args, environment, port, paths, "the API")
