"""deploy/compose.yaml and the files it reads, checked without a Docker engine.

The file is parsed with PyYAML and interpolated here the way compose does (`${VAR}`,
`${VAR:-default}`, `${VAR:?message}`, `$$`), then every promise is read off it. The
worker's entrypoint script is run for real with /bin/sh.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.destinations import load_destinations
from tests.deploy.helpers import (
    DEPLOY,
    LONGEST_TASK_SECONDS,
    REPO,
    ROUTING_KEY_SHAPE,
    parse_cli,
    read_env_file,
    settings_variables,
)

COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "compose.env.example"
SECRET_EXAMPLE = DEPLOY / "secrets" / "routing-keys.env.example"

# Every key a compose service may carry that this file uses or might: a typo such as
# `healtcheck` or `depend_on` is refused instead of silently ignored.
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "configs", "secrets",
    "deploy", "healthcheck", "depends_on", "volumes", "ports", "profiles", "restart", "init",
    "read_only", "tmpfs", "cap_drop", "cap_add", "security_opt", "stop_grace_period",
    "stop_signal", "user", "networks", "labels", "logging", "ulimits", "working_dir", "expose",
}
TOP_KEYS = {"name", "services", "configs", "secrets", "volumes", "networks"}

VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\})")


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation of one string; `MissingVariable` for an unmet `${VAR:?msg}`."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        unset = not value if op in (":-", ":?") else value is None
        if op in (":-", "-"):
            return arg if unset else str(value)
        if op in (":?", "?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return str(value)
        return value or ""

    return VARIABLE.sub(replace, text)


def interpolate_all(node: Any, env: dict[str, str], missing: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: interpolate_all(v, env, missing) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_all(v, env, missing) for v in node]
    if isinstance(node, str):
        try:
            return interpolate(node, env)
        except MissingVariable as exc:
            missing.append(str(exc))
            return node
    return node


def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def example_env() -> dict[str, str]:
    env = read_env_file(ENV_EXAMPLE)
    env["MONITAO_PD_FLOWER_PASSWORD"] = "a-password-for-the-test"
    return env


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    missing: list[str] = []
    data = interpolate_all(raw(), example_env() if env is None else env, missing)
    assert not missing, missing
    return data


def test_structure_has_no_unknown_keys() -> None:
    data = raw()
    # x-* keys are compose extension fields (the YAML anchors shared by services).
    assert {key for key in data if not key.startswith("x-")} <= TOP_KEYS
    assert set(data["services"]) == {"redis", "worker", "flower", "simulator"}
    for name, service in data["services"].items():
        assert set(service) <= SERVICE_KEYS, f"{name}: unknown {set(service) - SERVICE_KEYS}"


def test_required_variables_stop_compose_with_a_message() -> None:
    found = {m.group("name"): m.group("arg") for m in VARIABLE.finditer(COMPOSE.read_text())
             if m.group("op") in (":?", "?")}
    assert set(found) == {"MONITAO_PD_FLOWER_USER", "MONITAO_PD_FLOWER_PASSWORD",
                          "MONITAO_PD_DESTINATIONS_FILE", "MONITAO_PD_ROUTING_KEYS_FILE"}
    for name, message in found.items():
        assert len(message) > 10 and name in message, (name, message)
    # With nothing set, exactly those stop it; each is in the env example for the operator.
    missing: list[str] = []
    interpolate_all(raw(), {}, missing)
    assert {m.split(":")[0] for m in missing} == set(found)
    assert set(found) <= set(read_env_file(ENV_EXAMPLE))
    # With the example filled in (a Flower password), everything resolves.
    data = compose()
    assert data["services"]["worker"]["deploy"]["replicas"] == "2"


def test_every_other_variable_has_a_default() -> None:
    for match in VARIABLE.finditer(COMPOSE.read_text()):
        if match.group(0) != "$$":
            assert match.group("op") in (":-", ":?"), match.group(0)


def test_redis_is_durable_and_never_evicts() -> None:
    redis = compose()["services"]["redis"]
    command = redis["command"]
    pairs = dict(zip(command[1::2], command[2::2], strict=True))
    assert command[0] == "redis-server"
    assert pairs["--appendonly"] == "yes"
    assert pairs["--appendfsync"] == "everysec"
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert re.fullmatch(r"\d+[kmg]b", pairs["--maxmemory"])
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "ports" not in redis  # only the fleet reaches it
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_every_service_has_a_healthcheck_and_start_up_follows_health() -> None:
    services = compose()["services"]
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in ("worker", "flower"):
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    worker = services["worker"]["healthcheck"]
    assert worker["test"][0] == "CMD"
    context = parse_cli(worker["test"][1:])
    assert context.info_name == "health" and context.params["local"] is True
    assert _seconds(worker["timeout"]) > context.params["timeout"] + 5
    assert "/healthcheck" in " ".join(services["flower"]["healthcheck"]["test"])
    assert "/_sim/health" in " ".join(services["simulator"]["healthcheck"]["test"])


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", text)
    assert match, text
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_workers_scale_and_stop_gracefully() -> None:
    worker = compose()["services"]["worker"]
    assert int(worker["deploy"]["replicas"]) >= 2
    assert _seconds(worker["stop_grace_period"]) > LONGEST_TASK_SECONDS
    assert worker["deploy"]["resources"]["limits"]["memory"]
    assert parse_cli(worker["command"]).info_name == "worker"
    for name in ("worker", "flower", "simulator"):
        service = compose()["services"][name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]


def test_every_worker_replica_serves_metrics_on_the_compose_network_only() -> None:
    worker = compose()["services"]["worker"]
    port = int(worker["environment"]["MONITAO_PD_METRICS_PORT"])
    assert port > 0 and worker["expose"] == [str(port)]
    assert "ports" not in worker  # replicas would fight over a published host port


def test_flower_asks_for_basic_auth_and_listens_on_localhost_by_default() -> None:
    flower = raw()["services"]["flower"]
    for name in ("MONITAO_PD_FLOWER_USER", "MONITAO_PD_FLOWER_PASSWORD"):
        assert flower["environment"][name].startswith(f"${{{name}:?")
    assert compose()["services"]["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    context = parse_cli(flower["command"])
    assert context.info_name == "flower" and context.params["no_auth_on_localhost"] is False


def test_the_simulator_is_an_optional_profile() -> None:
    services = compose()["services"]
    assert services["simulator"]["profiles"] == ["trial"]
    assert all("profiles" not in services[name] for name in ("redis", "worker", "flower"))
    context = parse_cli(services["simulator"]["command"])
    assert context.params["host"] == "0.0.0.0" and context.params["port"] == 8181


def test_settings_variables_exist() -> None:
    """Every MONITAO_PD_* variable given to a service is a setting (none misspelled)."""
    known = settings_variables()
    for name, service in raw()["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith("MONITAO_PD_"):
                assert variable in known, f"{name}: {variable} is no setting"
    assert {"MONITAO_PD_REDIS_URL", "MONITAO_PD_CONFIG"} <= set(
        compose()["services"]["worker"]["environment"])


def test_routing_keys_come_from_a_secrets_file_only_to_the_worker() -> None:
    data = compose()
    assert set(data["secrets"]) == {"routing_keys"}
    assert data["secrets"]["routing_keys"]["file"] == "./secrets/routing-keys.env"
    for name, service in data["services"].items():
        assert ("routing_keys" in service.get("secrets", [])) == (name == "worker"), name
        assert not any(v.startswith("PD_KEY") for v in service.get("environment", {})), name
        assert "env_file" not in service, name
    assert "/run/secrets/routing_keys" in " ".join(data["services"]["worker"]["entrypoint"])
    assert not ROUTING_KEY_SHAPE.search(COMPOSE.read_text())
    # The real file is never committed: git ignores it, and only the example exists.
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/secrets/routing-keys.env"],
                             cwd=REPO, timeout=30)
    assert ignored.returncode == 0, "deploy/secrets/routing-keys.env is not git-ignored"
    assert read_env_file(SECRET_EXAMPLE) == {"PD_KEY_TRIAL": "REPLACE_ME"}


def test_config_and_build_paths_exist() -> None:
    data = compose()
    assert (DEPLOY / data["configs"]["destinations"]["file"]).is_file()
    build = data["services"]["worker"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
        DEPLOY / "docker" / "Dockerfile")
    target = data["services"]["worker"]["configs"][0]["target"]
    assert data["services"]["worker"]["environment"]["MONITAO_PD_CONFIG"] == target


def test_the_worker_entrypoint_loads_the_keys_into_the_process(tmp_path: Path) -> None:
    """The entrypoint script, run by /bin/sh as in the container, with `config check`."""
    key = secrets.token_hex(16)
    keys_file = tmp_path / "routing_keys"
    keys_file.write_text(SECRET_EXAMPLE.read_text().replace("REPLACE_ME", key))
    worker = compose()["services"]["worker"]
    script = worker["entrypoint"][2].replace("/run/secrets/routing_keys", str(keys_file))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MONITAO_PD_") and not k.startswith("PD_KEY")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MONITAO_PD_CONFIG"] = str(DEPLOY / compose()["configs"]["destinations"]["file"])
    done = subprocess.run([*worker["entrypoint"][:2], script, worker["entrypoint"][3],
                           "config", "check"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "set, 32 characters, from $PD_KEY_TRIAL" in done.stdout
    assert key not in done.stdout + done.stderr
    # Without the secret the worker would not start: the same script fails.
    keys_file.unlink()
    failed = subprocess.run([*worker["entrypoint"][:2], script, "monitao-pd", "config", "check"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0


@pytest.mark.parametrize("name", ["destinations.simulator.toml", "destinations.toml"])
def test_example_destinations_files_are_valid(name: str) -> None:
    path = DEPLOY / "examples" / name
    names = re.findall(r'routing_key_env = "([A-Z0-9_]+)"', path.read_text())
    assert names
    environ = {n: secrets.token_hex(16) for n in names}
    destinations = load_destinations(path, environ=environ)
    assert {d.routing_key_env for d in destinations.values()} == set(names)
    assert not ROUTING_KEY_SHAPE.search(path.read_text())
