"""deploy/systemd: the units read key by key, and `systemd-analyze verify` where it exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from config import defaults
from config.settings import load_settings
from tests.deploy.helpers import (
    DEPLOY,
    LONGEST_TASK_SECONDS,
    REPO,
    parse_cli,
    read_env_file,
    secret_settings,
    settings_variables,
    split_command,
)

SYSTEMD = DEPLOY / "systemd"
BINARY = "/opt/monitao-pd/bin/monitao-pd"
UNITS = ("monitao-pd-worker@.service", "monitao-pd-flower.service", "monitao-pd-api.service",
         "monitao-pd-health.service", "monitao-pd-health.timer")
ETC = "/etc/monitao-pd"
# An environment file per secret: each unit reads the shared settings and the secrets its
# role needs, and no others. The examples sit beside the units (routing-keys.env is the
# worker's NAME=KEY lines, named by the destinations file, so it has no example here).
ENV_FILES = {
    "monitao-pd-worker@.service": ["monitao-pd.env", "secret-keys.env", "routing-keys.env"],
    "monitao-pd-flower.service": ["monitao-pd.env", "flower.env"],
    "monitao-pd-api.service": ["monitao-pd.env", "secret-keys.env"],
    "monitao-pd-health.service": ["monitao-pd.env"],
}
ROLE_FILES = {"secret-keys.env", "routing-keys.env", "flower.env"}
EXAMPLES = ("monitao-pd.env.example", "secret-keys.env.example", "flower.env.example")
# The secret settings each example holds.
SECRETS_IN = {
    "monitao-pd.env.example": {"MONITAO_PD_REDIS_URL"},
    "secret-keys.env.example": {"MONITAO_PD_SECRET_KEYS"},
    "flower.env.example": {"MONITAO_PD_FLOWER_PASSWORD"},
}


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value (a key such as EnvironmentFile may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for number, raw in enumerate((SYSTEMD / name).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{name}:{number}: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(values: dict[str, list[str]], key: str) -> str:
    assert len(values.get(key, [])) == 1, key
    return values[key][0]


def test_the_folder_holds_exactly_these_units() -> None:
    assert sorted(p.name for p in SYSTEMD.iterdir()) == sorted([*UNITS, *EXAMPLES])


@pytest.mark.parametrize("name", ["monitao-pd-worker@.service", "monitao-pd-flower.service",
                                  "monitao-pd-api.service"])
def test_long_running_services_restart_and_are_hardened(name: str) -> None:
    service = unit(name)["Service"]
    assert one(service, "Restart") in ("always", "on-failure")
    assert float(one(service, "RestartSec")) > 0
    assert "/etc/monitao-pd/monitao-pd.env" in service["EnvironmentFile"]
    assert one(service, "NoNewPrivileges") == "yes"
    assert one(service, "ProtectSystem") in ("strict", "full")
    assert one(service, "ProtectHome") == "yes"
    assert one(service, "PrivateTmp") == "yes"
    assert one(service, "User") not in ("root", "0")
    assert one(service, "CapabilityBoundingSet") == ""
    assert unit(name)["Install"]["WantedBy"] == ["multi-user.target"]


def test_worker_unit() -> None:
    service = unit("monitao-pd-worker@.service")["Service"]
    start = split_command(one(service, "ExecStart"))
    assert start[0] == BINARY
    context = parse_cli(start)
    assert context.info_name == "worker" and context.params["name"].endswith("@%H")
    # Only the worker gets the routing keys; the key ring too (and the API).
    assert "/etc/monitao-pd/routing-keys.env" in service["EnvironmentFile"]
    assert "/etc/monitao-pd/secret-keys.env" in service["EnvironmentFile"]
    # Warm shutdown: SIGTERM, then enough time for the longest task.
    assert one(service, "KillSignal") == "SIGTERM"
    # Never give up restarting (a Redis outage outlasts any start limit).
    assert unit("monitao-pd-worker@.service")["Unit"]["StartLimitIntervalSec"] == ["0"]
    assert float(one(service, "TimeoutStopSec")) > LONGEST_TASK_SECONDS
    post = split_command(one(service, "ExecStartPost"))
    context = parse_cli(post)
    assert context.info_name == "health" and context.params["local"] is True
    assert context.params["wait"] > 0
    assert post[0] == BINARY
    # one port for every instance would make all but the first run without metrics
    assert not any("METRICS_PORT" in v for v in service.get("Environment", []))


def test_flower_unit_listens_on_localhost_with_auth() -> None:
    service = unit("monitao-pd-flower.service")["Service"]
    assert "/etc/monitao-pd/routing-keys.env" not in service["EnvironmentFile"]
    start = split_command(one(service, "ExecStart"))
    context = parse_cli(start)
    assert context.info_name == "flower"
    assert context.params["address"] == "127.0.0.1"
    assert context.params["no_auth_on_localhost"] is False
    assert {"MONITAO_PD_FLOWER_USER", "MONITAO_PD_FLOWER_PASSWORD"} == set(
        read_env_file(SYSTEMD / "flower.env.example"))


def test_api_unit_listens_on_localhost() -> None:
    service = unit("monitao-pd-api.service")["Service"]
    start = split_command(one(service, "ExecStart"))
    assert start[0] == BINARY
    context = parse_cli(start)
    assert context.info_name == "api"
    assert (context.params["host"], context.params["port"]) == ("127.0.0.1", 8300)
    assert "/etc/monitao-pd/routing-keys.env" not in service["EnvironmentFile"]
    # a send test may take its longest timeout before the process stops
    assert float(one(service, "TimeoutStopSec")) > defaults.API_SEND_TEST_MAX_TIMEOUT_SECONDS


def test_health_timer_runs_the_health_check() -> None:
    timer = unit("monitao-pd-health.timer")
    assert one(timer["Timer"], "Unit") == "monitao-pd-health.service"
    assert re.fullmatch(r"\d+min", one(timer["Timer"], "OnUnitActiveSec"))
    service = unit("monitao-pd-health.service")["Service"]
    assert one(service, "Type") == "oneshot"
    context = parse_cli(split_command(one(service, "ExecStart")))
    assert context.info_name == "health" and context.params["local"] is True
    assert one(service, "NoNewPrivileges") == "yes"
    assert one(service, "ProtectSystem") in ("strict", "full")


def test_environment_file_example_holds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    values: dict[str, str] = {}
    for example in EXAMPLES:
        values |= read_env_file(SYSTEMD / example)
    assert set(values) <= settings_variables()
    for name, value in values.items():
        if name not in secret_settings() - {"MONITAO_PD_REDIS_URL"}:
            monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.visibility_timeout > LONGEST_TASK_SECONDS
    assert urlsplit(settings.redis_url).password == "REPLACE_ME"


@pytest.mark.parametrize("name", sorted(ENV_FILES))
def test_each_unit_reads_the_shared_settings_and_its_own_roles_secrets(name: str) -> None:
    """The split env files: Flower's password never reaches a worker, nor the key ring or a
    routing key Flower; the other roles' files are not even readable from the process."""
    service = unit(name)["Service"]
    assert service["EnvironmentFile"] == [f"{ETC}/{f}" for f in ENV_FILES[name]]
    hidden = {path.lstrip("-") for line in service.get("InaccessiblePaths", [])
              for path in line.split()}
    assert hidden == {f"{ETC}/{f}" for f in ROLE_FILES - set(ENV_FILES[name])}, name


def test_every_secret_setting_is_in_the_file_of_the_role_that_needs_it() -> None:
    for example, expected in SECRETS_IN.items():
        values = read_env_file(SYSTEMD / example)
        assert set(values) & secret_settings() == expected, example
        for variable in expected:
            assert "REPLACE_ME" in values[variable], variable
    # What each unit's process ends up with, loading the examples as systemd does.
    environment = {}
    for name, files in ENV_FILES.items():
        environment[name] = set().union(*(
            read_env_file(SYSTEMD / f"{f}.example") for f in files
            if (SYSTEMD / f"{f}.example").exists()))
    assert "MONITAO_PD_FLOWER_PASSWORD" not in environment["monitao-pd-worker@.service"]
    assert "MONITAO_PD_SECRET_KEYS" in environment["monitao-pd-worker@.service"]
    assert "MONITAO_PD_SECRET_KEYS" not in environment["monitao-pd-flower.service"]
    # the API seals routing keys: the key ring, and of the secrets nothing else
    assert environment["monitao-pd-api.service"] & secret_settings() == {
        "MONITAO_PD_REDIS_URL", "MONITAO_PD_SECRET_KEYS"}
    assert environment["monitao-pd-health.service"] & secret_settings() == {
        "MONITAO_PD_REDIS_URL"}


@pytest.mark.parametrize("name", [*EXAMPLES, "routing-keys.env"])
def test_each_env_file_says_where_it_goes_with_mode_0640(name: str) -> None:
    """Every file holds a secret (the shared one the Redis password): root:monitao-pd 0640,
    and the README's systemd section installs it so."""
    file = name.removesuffix(".example")
    if name != file:
        header = (SYSTEMD / name).read_text().splitlines()[0]
        assert header.startswith(f"# {ETC}/{file} (root:monitao-pd, mode 0640)"), header
    section = (REPO / "README.md").read_text(encoding="utf-8").split("\n### systemd\n")[1]
    section = section.split("\n### ")[0]
    installed = [line for line in section.splitlines()
                 if line.startswith("install -m 0640 -o root -g monitao-pd ")]
    assert any(f"{ETC}/{file}" in line for line in installed), file


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own check. It insists that ExecStart's program exists, so the units are
    verified with the path of this checkout's monitao-pd in place of /opt/monitao-pd's."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    installed = str(Path(sys.executable).with_name("monitao-pd"))
    paths = []
    for name in UNITS:
        text = (SYSTEMD / name).read_text().replace(BINARY, installed)
        target = tmp_path / name.replace("@.", "@1.")  # a template is verified as an instance
        target.write_text(text)
        paths.append(str(target))
    done = subprocess.run([analyze, "verify", "--man=no", *paths], capture_output=True,
                          text=True, timeout=60)
    # verify exits 0 even for unknown keys or bad values; it says so on stderr.
    output = done.stdout + done.stderr
    assert done.returncode == 0 and not output.strip(), output


def test_systemd_analyze_verify_does_report_a_mistake(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    installed = str(Path(sys.executable).with_name("monitao-pd"))
    text = (SYSTEMD / "monitao-pd-flower.service").read_text().replace(BINARY, installed)
    broken = tmp_path / "monitao-pd-flower.service"
    broken.write_text(text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    done = subprocess.run([analyze, "verify", "--man=no", str(broken)], capture_output=True,
                          text=True, timeout=60)
    assert "Unknown key" in done.stderr
