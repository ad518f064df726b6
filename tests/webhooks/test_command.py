"""`monitao-pd webhooks`: refuses to start without a secret; serves as a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from cli.main import main
from tests.conftest import wait_until
from webhooks import signature_header

SECRET = "whsec-command-test-0a1b2c3d"


def test_refuses_to_start_without_a_secret_or_a_key_ring(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["webhooks", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "MONITAO_PD_WEBHOOK_SECRETS or MONITAO_PD_SECRET_KEYS is required" in err
    assert "Traceback" not in err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_serves_as_a_process_and_never_prints_the_secret(redis_url: str, prefix: str) -> None:
    port = free_port()
    env = {**os.environ, "MONITAO_PD_REDIS_URL": redis_url, "MONITAO_PD_KEY_PREFIX": prefix,
           "MONITAO_PD_WEBHOOK_SECRETS": f"old-secret-x,{SECRET}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "webhooks", "--port", str(port)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/webhooks/pagerduty"

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success
            except httpx.HTTPError:
                return False

        wait_until(up, 20, 0.1, "the receiver to answer")
        body = b'{"event": {"id": "E1", "event_type": "pagey.ping"}}'
        signed = {"X-PagerDuty-Signature": signature_header([SECRET], body)}
        assert httpx.post(url, content=body, headers=signed).status_code == 202
        assert httpx.post(url, content=body, headers={"X-PagerDuty-Signature": "v1=00"}
                          ).status_code == 401
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'monitao_pd_webhooks_total{event_type="other",result="unauthorized"}' in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()  # never leave the receiver running
            output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, output
    assert "listening on" in output and "2 secret(s)" in output
    assert SECRET not in output and "old-secret-x" not in output
