"""Nothing in deploy/ is left untested: each file is named here with the test module that
checks it, so a new file fails this test until a test covers it."""

from __future__ import annotations

import subprocess

from tests.deploy.helpers import DEPLOY, REPO, ROUTING_KEY_SHAPE

CHECKED_BY = {
    ".gitignore": "test_compose, test_kubernetes (git check-ignore of the real secrets)",
    "compose.yaml": "test_compose",
    "compose.env.example": "test_compose",
    "docker/Dockerfile": "test_docker",
    "docker/Dockerfile.dockerignore": "test_docker",
    "examples/destinations.simulator.toml": "test_compose",
    "examples/destinations.toml": "test_compose",
    "secrets/routing-keys.env.example": "test_compose",
    "secrets/redis-password.example": "test_compose",
    "secrets/secret-keys.env.example": "test_compose",
    "secrets/flower.env.example": "test_compose",
    "kubernetes/kustomization.yaml": "test_kubernetes",
    "kubernetes/namespace.yaml": "test_kubernetes",
    "kubernetes/settings-configmap.yaml": "test_kubernetes",
    "kubernetes/destinations-configmap.yaml": "test_kubernetes",
    "kubernetes/worker-deployment.yaml": "test_kubernetes",
    "kubernetes/worker-pdb.yaml": "test_kubernetes",
    "kubernetes/worker-scaledobject.yaml": "test_kubernetes",
    "kubernetes/keda-triggerauthentication.yaml": "test_kubernetes",
    "kubernetes/flower-deployment.yaml": "test_kubernetes",
    "kubernetes/flower-service.yaml": "test_kubernetes",
    "kubernetes/redis-statefulset.yaml": "test_kubernetes",
    "kubernetes/redis-service.yaml": "test_kubernetes",
    "kubernetes/webhooks-deployment.yaml": "test_kubernetes",
    "kubernetes/webhooks-service.yaml": "test_kubernetes",
    "kubernetes/api-deployment.yaml": "test_kubernetes",
    "kubernetes/api-service.yaml": "test_kubernetes",
    "kubernetes/networkpolicy-default-deny.yaml": "test_kubernetes",
    "kubernetes/networkpolicy-redis.yaml": "test_kubernetes",
    "kubernetes/networkpolicy-worker.yaml": "test_kubernetes",
    "kubernetes/networkpolicy-flower.yaml": "test_kubernetes",
    "kubernetes/networkpolicy-webhooks.yaml": "test_kubernetes",
    "kubernetes/networkpolicy-api.yaml": "test_kubernetes",
    "kubernetes/secrets/routing-keys.env.example": "test_kubernetes",
    "kubernetes/secrets/secret-keys.env.example": "test_kubernetes",
    "kubernetes/secrets/redis.env.example": "test_kubernetes",
    "kubernetes/secrets/flower.env.example": "test_kubernetes",
    "kubernetes/secrets/webhooks.env.example": "test_kubernetes",
    "systemd/monitao-pd-worker@.service": "test_systemd",
    "systemd/monitao-pd-flower.service": "test_systemd",
    "systemd/monitao-pd-api.service": "test_systemd",
    "systemd/monitao-pd-health.service": "test_systemd",
    "systemd/monitao-pd-health.timer": "test_systemd",
    "systemd/monitao-pd.env.example": "test_systemd",
    "systemd/secret-keys.env.example": "test_systemd",
    "systemd/flower.env.example": "test_systemd",
    "observability/alerts.yaml": "test_observability",
    "observability/alerts.test.yaml": "test_observability",
    "observability/grafana-dashboard.json": "test_observability",
}


def deploy_files() -> set[str]:
    """Files under deploy/ that git tracks or would track (ignored secrets excluded)."""
    done = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "deploy"],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    return {line.removeprefix("deploy/") for line in done.stdout.splitlines()
            if (REPO / line).is_file()}


def test_every_deploy_file_is_checked_by_a_test() -> None:
    assert deploy_files() == set(CHECKED_BY)


def test_no_routing_key_shaped_string_in_deploy() -> None:
    for name in deploy_files():
        text = (DEPLOY / name).read_text(encoding="utf-8")
        assert not ROUTING_KEY_SHAPE.search(text), name
