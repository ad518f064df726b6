"""`monitao-pd api` as it is run: a process serving on the port it is given, a token from
`monitao-pd tokens create` (another process), a graceful stop on SIGTERM, and a bad
configuration refused at start-up with exit 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from config.embedded_redis import free_port
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]


def command(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())",
            *args]


@pytest.mark.slow
def test_the_api_command_serves_with_tokens_from_the_tokens_command(
    cli_env: Path, tmp_path: Path
) -> None:
    env = {**os.environ}
    made = subprocess.run(command("tokens", "create", "--name", "ops", "--scope",
                                  "status:read"),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("wb") as output:
        server = subprocess.Popen(command("api", "--port", str(port)), cwd=REPO, env=env,
                                  stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def answers() -> bool:
            try:
                return httpx.get(base + "/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, 30, 0.1, "the API to answer")
        status = httpx.get(base + "/v1/status", params={"ping": "false"},
                           headers={"Authorization": f"Bearer {token}"})
        assert status.status_code == 200 and status.json()["healthy"] is True
        assert httpx.get(base + "/v1/status").status_code == 401
        assert httpx.get(base + "/openapi.json").json()["openapi"].startswith("3.1")
        server.send_signal(signal.SIGTERM)
        server.wait(20)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
    output_text = log.read_text()
    assert f"listening on http://127.0.0.1:{port}" in output_text
    assert token not in output_text and "Traceback" not in output_text


def test_a_bad_configuration_stops_it_at_start_up(cli_env: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    done = subprocess.run(command("api", "--port", str(free_port())), cwd=REPO,
                          env={**os.environ, "MONITAO_PD_CONFIG": "/nonexistent.toml"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("error: invalid configuration\n"
                           "  /nonexistent.toml: file not found\n")
