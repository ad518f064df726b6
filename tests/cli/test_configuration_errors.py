"""A wrong Redis URL or destinations file is a configuration error for every command: one
message naming the variable, exit 2, no traceback, nothing started (README: exit status)."""

from __future__ import annotations

import os
import signal
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from cli.main import main

# A database no Redis configuration has (the default `databases` is 16).
MISSING_DB = 999_999

# Commands that answer and exit; run in-process.
COMMANDS = [
    ["health", "--timeout", "1"],
    ["send", "--action", "resolve", "--monitor-id", "1", "--incident-id", "2"],
    ["status"],
    ["status", "--no-ping", "--json"],
    ["timeline", "some-incident"],
    ["dlq", "list"],
    ["replay", "--all", "--dry-run"],
    ["maintenance", "list"],
    ["test-destination", "prod", "--timeout", "2"],
    ["run", "--exit-after-demo"],
]
# Commands that would run until stopped; run as processes (the fix makes them exit at once).
SERVICES = [["worker"], ["flower", "--no-auth-on-localhost"], ["webhooks", "--port", "0"]]


def with_database(url: str, database: object) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", "", ""))


@pytest.fixture
def config_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, prefix: str,
               routing_key: str, sim) -> dict[str, str]:
    """A complete environment for every command; the test then breaks one setting."""
    config = tmp_path / "destinations.toml"
    config.write_text(f'[destinations.prod]\nrouting_key_env = "PD_KEY_PROD"\n'
                      f'events_url = "{sim.events_url}"\n', encoding="utf-8")
    env = {"MONITAO_PD_REDIS_URL": redis_url, "MONITAO_PD_KEY_PREFIX": prefix,
           "MONITAO_PD_CONFIG": str(config), "PD_KEY_PROD": routing_key,
           "MONITAO_PD_WEBHOOK_SECRETS": "a-webhook-secret-of-this-test"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def not_redis() -> Iterator[str]:
    """A redis:// URL where an HTTP server answers (a proxy, a web server: a wrong port)."""

    class Answer(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(1024)
            self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        block_on_close = False

    with Server(("127.0.0.1", 0), Answer) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        yield f"redis://127.0.0.1:{server.server_address[1]}/0"
        server.shutdown()
        thread.join(5)


def assert_configuration_error(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    assert err.startswith("error: invalid configuration\n"), err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err


def run_service(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MONITAO_PD_")}
    full.update(env)
    command = Path(sys.executable).with_name("monitao-pd")
    process = subprocess.Popen([str(command), *args], env=full, cwd=cwd, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # and whatever it started
        process.communicate(timeout=10)
        pytest.fail(f"`monitao-pd {' '.join(args)}` kept running instead of refusing")
    return process.returncode, err


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_database_the_server_does_not_have(
    config_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, args: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = with_database(config_env["MONITAO_PD_REDIS_URL"], MISSING_DB)
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", url)
    code = main(args)
    assert_configuration_error(code, capsys.readouterr().err,
                               f"MONITAO_PD_REDIS_URL: Redis at {url} has no such database")


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
@pytest.mark.parametrize(("url", "problem"), [
    ("redis://:hunter2@127.0.0.1:6379/zero", "database 'zero' in 'redis://:***@127.0.0.1"),
    ("redis://127.0.0.1:port/0", "not a valid URL (Port could not be cast"),
    ("127.0.0.1:6379", "must be redis://host[:port][/db], rediss://..., unix://path or "
                       "sentinel://... (no scheme)"),
])
def test_a_malformed_redis_url(
    config_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, args: list[str], url: str,
    problem: str, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", url)
    code = main(args)
    err = capsys.readouterr().err
    assert_configuration_error(code, err, f"MONITAO_PD_REDIS_URL: {problem}")
    assert "hunter2" not in err


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_url_where_something_else_than_redis_answers(
    config_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, args: list[str],
    not_redis: str, capsys: pytest.CaptureFixture[str],
) -> None:
    url = not_redis
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", url)
    code = main(args)
    assert_configuration_error(code, capsys.readouterr().err,
                               f"MONITAO_PD_REDIS_URL: what answers at {url} is not Redis")


def test_a_broker_database_the_server_does_not_have(
    config_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = with_database(config_env["MONITAO_PD_REDIS_URL"], MISSING_DB)
    monkeypatch.setenv("MONITAO_PD_BROKER_URL", url)
    for args in (["health", "--timeout", "1"], ["status"]):
        code = main(args)
        assert_configuration_error(code, capsys.readouterr().err,
                                   f"MONITAO_PD_BROKER_URL: Redis at {url} has no such database")


def test_a_broker_url_where_something_else_than_redis_answers(
    config_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, not_redis: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = not_redis
    monkeypatch.setenv("MONITAO_PD_BROKER_URL", url)
    for args in (["health", "--timeout", "1"], ["status"]):
        code = main(args)
        assert_configuration_error(code, capsys.readouterr().err,
                                   f"MONITAO_PD_BROKER_URL: what answers at {url} is not Redis")


@pytest.mark.slow
@pytest.mark.parametrize("args", SERVICES, ids=lambda a: a[0])
def test_services_refuse_a_wrong_database_instead_of_retrying_for_ever(
    config_env: dict[str, str], args: list[str], tmp_path: Path
) -> None:
    url = with_database(config_env["MONITAO_PD_REDIS_URL"], MISSING_DB)
    code, err = run_service(args, dict(config_env, MONITAO_PD_REDIS_URL=url), tmp_path)
    assert_configuration_error(code, err, "MONITAO_PD_REDIS_URL", "has no such database")


@pytest.mark.parametrize("args", [["status"], ["status", "--no-ping", "--json"]])
@pytest.mark.parametrize(("content", "problem"), [
    ("[destinations.prod\n", "not valid TOML"),
    ('[destinations.prod]\nregion = "mars"\nrouting_key_env = "PD_KEY_PROD"\n',
     "destinations.prod.region"),
])
def test_status_reports_an_invalid_destinations_file(
    config_env: dict[str, str], args: list[str], content: str, problem: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    Path(config_env["MONITAO_PD_CONFIG"]).write_text(content, encoding="utf-8")
    code = main(args)
    captured = capsys.readouterr()
    assert_configuration_error(code, captured.err, problem)
    assert "OK" not in captured.out and "nothing pending" not in captured.out
