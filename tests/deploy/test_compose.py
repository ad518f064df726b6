"""deploy/compose.yaml and the files it reads, checked without a Docker engine.

The file is parsed with PyYAML and interpolated here the way compose does (`${VAR}`,
`${VAR:-default}`, `${VAR:?message}`, `$$`), then every promise is read off it. The
scripts run for real with /bin/sh: Redis's start-up (with this machine's redis-server, which
then requires the password), the fleet's entrypoint (which loads the secrets) and the
healthchecks, each with a directory standing in for /run/secrets.
"""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from config import tokens
from config.destinations import load_destinations
from config.embedded_redis import free_port
from config.keyspace import Keyspace
from tests.conftest import wait_until
from tests.deploy.helpers import (
    DEPLOY,
    LONGEST_TASK_SECONDS,
    REPO,
    ROUTING_KEY_SHAPE,
    cmdline,
    parse_cli,
    read_env_file,
    redis_started_by,
    script_environment,
    secret_settings,
    settings_variables,
    stop,
)

COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "compose.env.example"
SECRETS = DEPLOY / "secrets"
SECRET_EXAMPLE = SECRETS / "routing-keys.env.example"
RUN_SECRETS = "/run/secrets"
# What each service may know: the secrets it is given (and so its entrypoint loads).
SECRETS_OF = {
    "redis": {"redis_password"},
    "worker": {"redis_password", "routing_keys", "secret_keys"},
    "flower": {"redis_password", "flower_credentials"},
    "api": {"redis_password", "secret_keys"},
    "simulator": set(),
}
# The services that talk to Redis; the others must not be able to.
REDIS_CLIENTS = {"worker", "flower", "api"}

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


def uncommented() -> str:
    """The file without its comment lines (compose interpolates values only)."""
    return "\n".join(line for line in COMPOSE.read_text(encoding="utf-8").splitlines()
                     if not line.lstrip().startswith("#"))


def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    missing: list[str] = []
    data = interpolate_all(raw(), example_env() if env is None else env, missing)
    assert not missing, missing
    return data


def test_structure_has_no_unknown_keys() -> None:
    data = raw()
    # x-* keys are compose extension fields (the YAML anchors shared by services).
    assert {key for key in data if not key.startswith("x-")} <= TOP_KEYS
    assert set(data["services"]) == {"redis", "worker", "flower", "api", "simulator"}
    for name, service in data["services"].items():
        assert set(service) <= SERVICE_KEYS, f"{name}: unknown {set(service) - SERVICE_KEYS}"


def test_required_variables_stop_compose_with_a_message() -> None:
    found = {m.group("name"): m.group("arg") for m in VARIABLE.finditer(uncommented())
             if m.group("op") in (":?", "?")}
    assert set(found) == {"MONITAO_PD_DESTINATIONS_FILE", "MONITAO_PD_REDIS_PASSWORD_FILE",
                          "MONITAO_PD_ROUTING_KEYS_FILE", "MONITAO_PD_SECRET_KEYS_FILE",
                          "MONITAO_PD_FLOWER_CREDENTIALS_FILE"}
    for name, message in found.items():
        assert len(message) > 10 and name in message, (name, message)
    # With nothing set, exactly those stop it; each is in the env example for the operator.
    missing: list[str] = []
    interpolate_all(raw(), {}, missing)
    assert {m.split(":")[0] for m in missing} == set(found)
    assert set(found) <= set(read_env_file(ENV_EXAMPLE))
    # With the example, everything resolves (it names files; no secret is in it).
    data = compose()
    assert data["services"]["worker"]["deploy"]["replicas"] == "2"


def test_every_other_variable_has_a_default() -> None:
    for match in VARIABLE.finditer(uncommented()):
        if match.group(0) != "$$":
            assert match.group("op") in (":-", ":?"), match.group(0)


def test_every_dollar_of_a_script_is_escaped() -> None:
    """Compose would replace a bare `$name` of a shell script with its own variable (empty)."""
    text = uncommented()
    for match in re.finditer(r"\$(\$|\{|.)", text):
        assert match.group(1) in ("$", "{"), text[match.start():match.start() + 20]


def test_redis_is_durable_and_never_evicts() -> None:
    redis_service = compose()["services"]["redis"]
    command = redis_service["command"]
    pairs = dict(zip(command[::2], command[1::2], strict=True))
    assert "exec docker-entrypoint.sh redis-server - " in redis_service["entrypoint"][2]
    assert pairs["--appendonly"] == "yes"
    assert pairs["--appendfsync"] == "everysec"
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert re.fullmatch(r"\d+[kmg]b", pairs["--maxmemory"])
    assert any(volume.endswith(":/data") for volume in redis_service["volumes"])
    assert "ports" not in redis_service  # only the fleet reaches it
    assert "redis-cli ping" in " ".join(redis_service["healthcheck"]["test"])


def test_every_service_has_a_healthcheck_and_start_up_follows_health() -> None:
    services = compose()["services"]
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in ("worker", "flower", "api"):
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    worker = services["worker"]["healthcheck"]
    assert worker["test"][:3] == ["CMD", "/bin/sh", "-c"]
    context = parse_cli(worker["test"][5:])
    assert context.info_name == "health" and context.params["local"] is True
    assert _seconds(worker["timeout"]) > context.params["timeout"] + 5
    assert "/healthcheck" in " ".join(services["flower"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
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
    for name in ("worker", "flower", "api", "simulator"):
        service = compose()["services"][name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]


def test_every_worker_replica_serves_metrics_on_the_compose_network_only() -> None:
    worker = compose()["services"]["worker"]
    port = int(worker["environment"]["MONITAO_PD_METRICS_PORT"])
    assert port > 0 and worker["expose"] == [str(port)]
    assert "ports" not in worker  # replicas would fight over a published host port


def test_flower_asks_for_basic_auth_and_listens_on_localhost_by_default() -> None:
    flower = compose()["services"]["flower"]
    # The credentials come from the secret file flower.env, which only Flower is given.
    assert {"source": "flower_credentials", "target": "flower.env"} in flower["secrets"]
    assert set(read_env_file(SECRETS / "flower.env.example")) == {
        "MONITAO_PD_FLOWER_USER", "MONITAO_PD_FLOWER_PASSWORD"}
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    context = parse_cli(flower["command"])
    assert context.info_name == "flower" and context.params["no_auth_on_localhost"] is False


def test_the_simulator_is_an_optional_profile() -> None:
    services = compose()["services"]
    assert services["simulator"]["profiles"] == ["trial"]
    assert all("profiles" not in services[name] for name in ("redis", "worker", "flower",
                                                              "api"))
    context = parse_cli(services["simulator"]["command"])
    assert context.params["host"] == "0.0.0.0" and context.params["port"] == 8181


def test_settings_variables_exist() -> None:
    """Every MONITAO_PD_* variable given to a service is a setting (none misspelled)."""
    known = settings_variables()
    for name, service in raw()["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith("MONITAO_PD_"):
                assert variable in known, f"{name}: {variable} is no setting"
    assert "MONITAO_PD_CONFIG" in compose()["services"]["worker"]["environment"]


def secrets_of(service: dict[str, Any]) -> dict[str, str]:
    """Secret name -> the file name it is mounted as under /run/secrets."""
    given = {}
    for entry in service.get("secrets", []):
        if isinstance(entry, str):
            given[entry] = entry
        else:
            given[entry["source"]] = entry.get("target", entry["source"])
    return given


def test_each_service_is_given_only_the_secrets_it_needs() -> None:
    data = compose()
    assert set(data["secrets"]) == set().union(*SECRETS_OF.values())
    for name, service in data["services"].items():
        assert set(secrets_of(service)) == SECRETS_OF[name], name
        # Nothing secret in the environment (it would show in `docker inspect`).
        assert not set(service.get("environment", {})) & secret_settings(), name
        assert not any(v.startswith("PD_KEY") for v in service.get("environment", {})), name
        assert "env_file" not in service, name
    for secret in data["secrets"].values():
        path = DEPLOY / secret["file"]
        # The real files are never committed: git ignores them, and only examples exist.
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO, timeout=30)
        assert ignored.returncode == 0, f"{path} is not git-ignored"
        assert path.with_name(path.name + ".example").is_file(), path
    assert not ROUTING_KEY_SHAPE.search(COMPOSE.read_text())
    assert read_env_file(SECRET_EXAMPLE) == {"PD_KEY_TRIAL": "REPLACE_ME"}
    assert read_env_file(SECRETS / "secret-keys.env.example") == {
        "MONITAO_PD_SECRET_KEYS": "REPLACE_ME"}
    assert (SECRETS / "redis-password.example").read_text() == "REPLACE_ME\n"


def test_redis_and_only_its_clients_share_a_network_with_no_way_out() -> None:
    """The simulator (or anything else on the way out) cannot reach Redis: whoever did could
    write the webhook inbox past the signature check."""
    data = compose()
    networks = {name: set(service["networks"]) for name, service in data["services"].items()}
    assert networks["redis"] == {"redis"}
    assert data["networks"]["redis"]["internal"] is True
    for name, joined in networks.items():
        shares = bool(joined & networks["redis"])
        assert shares == (name in REDIS_CLIENTS | {"redis"}), name
    assert not networks["simulator"] & networks["redis"]
    # The workers reach PagerDuty (and the simulator) on a network with a way out.
    assert networks["simulator"] <= networks["worker"] - {"redis"}


def test_every_redis_client_is_given_the_password_by_its_entrypoint() -> None:
    data = compose()
    for name in REDIS_CLIENTS:
        service = data["services"][name]
        script = service["entrypoint"][2]
        assert secrets_of(service)["redis_password"] == "redis_password"
        assert f"$(cat {RUN_SECRETS}/redis_password)" in script, name
        assert "MONITAO_PD_REDIS_URL=" in script and service["entrypoint"][3] == "monitao-pd"
    for name in set(data["services"]) - REDIS_CLIENTS - {"redis"}:
        assert "entrypoint" not in data["services"][name], name


def fill_secrets(directory: Path, service: dict[str, Any], password: str) -> dict[str, str]:
    """The secret files a service is given, in `directory` (standing in for /run/secrets),
    made from the examples with fresh values; returns the values by variable."""
    directory.mkdir(exist_ok=True)
    values = {"PD_KEY_TRIAL": secrets.token_hex(16),
              "MONITAO_PD_SECRET_KEYS": base64.b64encode(secrets.token_bytes(32)).decode(),
              "MONITAO_PD_FLOWER_USER": "monitao",
              "MONITAO_PD_FLOWER_PASSWORD": secrets.token_urlsafe(16)}
    for name, target in secrets_of(service).items():
        if name == "redis_password":
            (directory / target).write_text(password + "\n")
            continue
        path = DEPLOY / compose()["secrets"][name]["file"]
        example = read_env_file(path.with_name(path.name + ".example"))
        (directory / target).write_text("".join(f"{v}={values[v]}\n" for v in example))
    return values


def in_directory(text: str, directory: Path) -> str:
    return text.replace(RUN_SECRETS, str(directory))


def redis_argv(directory: Path) -> list[str]:
    service = compose()["services"]["redis"]
    entrypoint = service["entrypoint"]
    return [*entrypoint[:2], in_directory(entrypoint[2], directory), *entrypoint[3:],
            *service["command"]]


def client_argv(name: str, directory: Path, port: int, *args: str) -> list[str]:
    """The service's entrypoint, its secrets in `directory` and Redis at 127.0.0.1:port."""
    entrypoint = compose()["services"][name]["entrypoint"]
    script = in_directory(entrypoint[2], directory).replace("@redis:6379/", f"@127.0.0.1:{port}/")
    return [*entrypoint[:2], script, entrypoint[3], *args]


@pytest.mark.slow
def test_redis_requires_the_password_and_keeps_it_off_its_command_line(tmp_path: Path) -> None:
    password = secrets.token_hex(32)
    run_secrets = tmp_path / "secrets"
    fill_secrets(run_secrets, compose()["services"]["redis"], password)
    with redis_started_by(redis_argv(run_secrets), tmp_path) as server:
        anonymous = redis.Redis(port=server.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        wrong = redis.Redis(port=server.port, password="x" * 32)
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        wrong.close()
        client = redis.Redis(port=server.port, password=password)
        assert client.ping() is True
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.close()
        assert "redis-server" in cmdline(server.pid) and password not in cmdline(server.pid)
        # The healthcheck passes with the secret and fails on a Redis that refuses it.
        health = compose()["services"]["redis"]["healthcheck"]["test"]
        assert health[0] == "CMD-SHELL"
        check = in_directory(health[1], run_secrets).replace(
            "redis-cli", f"redis-cli -p {server.port}")
        ok = subprocess.run(["/bin/sh", "-c", check], capture_output=True, timeout=30)
        assert ok.returncode == 0, ok
        (run_secrets / "redis_password").write_text("y" * 32)
        refused = subprocess.run(["/bin/sh", "-c", check], capture_output=True, timeout=30)
        assert refused.returncode != 0


@pytest.mark.parametrize(("password", "reason"), [
    ("REPLACE_ME", "at least 16 characters"),
    ("", "at least 16 characters"),
    ("a-password-with a space", "only letters, digits"),
    ("a-password-with-a-@-sign", "only letters, digits"),
    ("two-lines-of-password\nappendonly no", "only letters, digits"),
])
def test_redis_refuses_a_weak_or_unquotable_password(tmp_path: Path, password: str,
                                                     reason: str) -> None:
    """An empty or placeholder password, or one that would need quoting in the URL or the
    configuration (or inject a line into it), stops Redis before it starts."""
    run_secrets = tmp_path / "secrets"
    fill_secrets(run_secrets, compose()["services"]["redis"], password)
    done = subprocess.run(redis_argv(run_secrets), capture_output=True, text=True, timeout=30,
                          env=script_environment())
    assert done.returncode == 2
    assert f"redis_password: {'use ' if 'only' in reason else ''}{reason}" in done.stderr
    assert "Redis" not in done.stdout  # redis-server never started


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REDIS_CLIENTS))
def test_fleet_services_reach_redis_with_its_password(tmp_path: Path, name: str) -> None:
    """The entrypoint of a Redis client, run with its secrets, reaches the Redis that the
    redis service's script started, which refuses anyone without the password: `health` gets
    past Redis (no worker answers here)."""
    password = secrets.token_hex(32)
    redis_secrets, client_secrets = tmp_path / "redis-secrets", tmp_path / "client-secrets"
    fill_secrets(redis_secrets, compose()["services"]["redis"], password)
    fill_secrets(client_secrets, compose()["services"][name], password)
    with redis_started_by(redis_argv(redis_secrets), tmp_path) as server:
        done = subprocess.run(client_argv(name, client_secrets, server.port, "health",
                                          "--timeout", "1"),
                              capture_output=True, text=True, timeout=60,
                              env=script_environment())
        output = done.stdout + done.stderr
        assert "Redis answers, but no worker" in output, output
        assert password not in output
        if name == "worker":
            # The worker's healthcheck, which runs beside the entrypoint, gets as far.
            health = [in_directory(part, client_secrets).replace(
                "@redis:6379/", f"@127.0.0.1:{server.port}/")
                for part in compose()["services"]["worker"]["healthcheck"]["test"][1:]]
            checked = subprocess.run([*health[:-1], "1"], capture_output=True, text=True,
                                     timeout=60, env=script_environment())
            assert "Redis answers, but no worker on this host" in checked.stdout + checked.stderr


def test_the_api_is_published_on_localhost_by_default_and_checked_on_healthz() -> None:
    api = compose()["services"]["api"]
    context = parse_cli(api["command"])
    assert context.info_name == "api" and context.params["host"] == "0.0.0.0"
    port = context.params["port"]
    assert api["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert f"'http://127.0.0.1:{port}/healthz'" in " ".join(api["healthcheck"]["test"])
    # the destinations file's names (an event for one is accepted), at the path it is told
    assert api["configs"] == compose()["services"]["worker"]["configs"]
    assert api["environment"]["MONITAO_PD_CONFIG"] == api["configs"][0]["target"]


@pytest.mark.slow
def test_the_api_serves_with_its_secrets_and_its_healthcheck_follows_redis(
    tmp_path: Path,
) -> None:
    """The API's entrypoint, run with its secrets against the Redis of the redis service's
    script: the healthcheck passes; a routing key given to it is sealed (the key ring
    reached the process: without it the answer is 503); once Redis is gone the healthcheck
    fails."""
    password = secrets.token_hex(32)
    redis_secrets, run_secrets = tmp_path / "redis-secrets", tmp_path / "secrets"
    fill_secrets(redis_secrets, compose()["services"]["redis"], password)
    fill_secrets(run_secrets, compose()["services"]["api"], password)
    service = compose()["services"]["api"]
    port = free_port()
    env = script_environment() | {
        "MONITAO_PD_CONFIG": str(DEPLOY / compose()["configs"]["destinations"]["file"])}
    health = [part.replace(":8300/", f":{port}/") for part in service["healthcheck"]["test"][1:]]

    def healthy() -> bool:
        return subprocess.run(health, env=env, capture_output=True, timeout=30).returncode == 0

    process = None
    try:
        with redis_started_by(redis_argv(redis_secrets), tmp_path) as server:
            command = [*service["command"][:1], "--host", "127.0.0.1", "--port", str(port)]
            process = subprocess.Popen(client_argv("api", run_secrets, server.port, *command),
                                       env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            wait_until(lambda: process.poll() is not None or healthy(), timeout=60,
                       message="the API's healthcheck to pass")
            assert process.poll() is None, f"the API exited with {process.returncode}"
            client = redis.Redis(port=server.port, password=password, decode_responses=True)
            keys = Keyspace(service["environment"]["MONITAO_PD_KEY_PREFIX"])
            token, _ = tokens.create(client, keys, "deploy-test", ["destinations:write"])
            key = "".join(secrets.choice("ABCDEFGH0123456789") for _ in range(32))
            added = httpx.post(f"http://127.0.0.1:{port}/v1/destinations", timeout=30,
                               headers={"Authorization": f"Bearer {token}"},
                               json={"name": "acme", "routing_key": key})
            assert added.status_code == 201, added.text
            assert added.json()["routing_key"]["origin"] == "registry"
            stored = client.hget(keys.destination("acme"), "routing_key")
            assert stored and stored.startswith("v1:") and key not in stored
            client.close()
        wait_until(lambda: not healthy(), timeout=30, message="the healthcheck to fail")
    finally:
        if process is not None:
            stop(process)


def test_config_and_build_paths_exist() -> None:
    data = compose()
    assert (DEPLOY / data["configs"]["destinations"]["file"]).is_file()
    build = data["services"]["worker"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
        DEPLOY / "docker" / "Dockerfile")
    target = data["services"]["worker"]["configs"][0]["target"]
    assert data["services"]["worker"]["environment"]["MONITAO_PD_CONFIG"] == target


@pytest.mark.slow
def test_the_worker_entrypoint_loads_the_keys_into_the_process(tmp_path: Path) -> None:
    """The entrypoint script, run by /bin/sh as in the container, with `config check`."""
    password = secrets.token_hex(32)
    redis_secrets, run_secrets = tmp_path / "redis-secrets", tmp_path / "secrets"
    fill_secrets(redis_secrets, compose()["services"]["redis"], password)
    values = fill_secrets(run_secrets, compose()["services"]["worker"], password)
    key = values["PD_KEY_TRIAL"]
    env = script_environment()
    env["MONITAO_PD_CONFIG"] = str(DEPLOY / compose()["configs"]["destinations"]["file"])
    with redis_started_by(redis_argv(redis_secrets), tmp_path) as server:
        argv = client_argv("worker", run_secrets, server.port, "config", "check")
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "set, 32 characters, from $PD_KEY_TRIAL" in done.stdout
        assert key not in done.stdout + done.stderr
        # Without the secret the worker would not start: the same script fails.
        (run_secrets / "routing-keys.env").unlink()
        failed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert failed.returncode != 0


@pytest.mark.parametrize("name", sorted(REDIS_CLIENTS))
def test_the_entrypoint_loads_exactly_the_secrets_given(tmp_path: Path, name: str) -> None:
    """What reaches the process: the worker gets the key ring and routing keys, not Flower's
    password; Flower gets its credentials, not the key ring or a routing key; the API gets
    the key ring (it seals the routing keys it is given), not a routing key or Flower's
    password."""
    run_secrets = tmp_path / "secrets"
    password = secrets.token_hex(32)
    values = fill_secrets(run_secrets, compose()["services"][name], password)
    # Nothing connects: the script prints the environment instead of running monitao-pd.
    script = client_argv(name, run_secrets, 6390)[2].replace('exec monitao-pd "$@"', "env")
    done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                          timeout=30, env=script_environment())
    assert done.returncode == 0, done.stderr
    environment = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert environment["MONITAO_PD_REDIS_URL"] == f"redis://:{password}@127.0.0.1:6390/0"
    expected = {"worker": {"PD_KEY_TRIAL", "MONITAO_PD_SECRET_KEYS"},
                "flower": {"MONITAO_PD_FLOWER_USER", "MONITAO_PD_FLOWER_PASSWORD"},
                "api": {"MONITAO_PD_SECRET_KEYS"}}[name]
    for variable, value in values.items():
        assert (environment.get(variable) == value) == (variable in expected), variable


@pytest.mark.parametrize("name", ["destinations.simulator.toml", "destinations.toml"])
def test_example_destinations_files_are_valid(name: str) -> None:
    path = DEPLOY / "examples" / name
    names = re.findall(r'routing_key_env = "([A-Z0-9_]+)"', path.read_text())
    assert names
    environ = {n: secrets.token_hex(16) for n in names}
    destinations = load_destinations(path, environ=environ)
    assert {d.routing_key_env for d in destinations.values()} == set(names)
    assert not ROUTING_KEY_SHAPE.search(path.read_text())
