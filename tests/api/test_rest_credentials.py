"""REST credentials through the doors: the HTTP API and `monitao-pd destinations` take a
PagerDuty service id and API token (write-only: described, never returned, sealed in
Redis), change them and drop them, calling the same `Registry`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis

from config.secrets import fingerprint
from tests.cli.operate.support import run
from tests.config.test_registry import our_keys
from tests.conftest import random_routing_key

TOKEN = "y_NbAkKc66ryYTWUXYEu-rest"


def test_api_takes_rest_credentials_write_only(client: httpx.Client, redis_conn: redis.Redis,
                                               prefix: str) -> None:
    added = client.post("/v1/destinations", json={
        "name": "acme", "routing_key": random_routing_key(), "region": "eu",
        "pagerduty_service_id": "PABC123", "pagerduty_api_token": TOKEN,
        "pagerduty_from": "ops@example.com"})
    assert added.status_code == 201, added.text
    record = added.json()
    assert record["pagerduty_service_id"] == "PABC123"
    assert record["pagerduty_api_url"] == "https://api.eu.pagerduty.com"
    assert record["pagerduty_api_token"]["fingerprint"] == fingerprint(TOKEN)
    shown = client.get("/v1/destinations/acme")
    assert TOKEN not in added.text and TOKEN not in shown.text
    assert TOKEN not in repr(our_keys(redis_conn, prefix))

    refused = client.patch("/v1/destinations/acme", json={"pagerduty_api_token": "x y"})
    assert refused.status_code == 422 and "pagerduty_api_token" in refused.text
    assert "x y" not in refused.text

    dropped = client.patch("/v1/destinations/acme", json={"pagerduty_service_id": None})
    assert dropped.status_code == 200, dropped.text
    assert dropped.json()["pagerduty_api_token"] is None
    half = client.patch("/v1/destinations/acme", json={"pagerduty_service_id": "PABC123"})
    assert half.status_code == 422 and "pagerduty_service_id" in half.text


def test_cli_takes_the_api_token_from_a_variable_and_never_prints_it(
        cli_env: Path, key_ring: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], redis_conn: redis.Redis, prefix: str) -> None:
    monkeypatch.setenv("MONITAO_PD_SECRET_KEYS", key_ring)
    monkeypatch.setenv("ACME_KEY", random_routing_key())
    monkeypatch.setenv("ACME_PD_TOKEN", TOKEN)
    code, out, err = run(capsys, "destinations", "add", "acme", "--routing-key-env", "ACME_KEY",
                         "--service-id", "PABC123", "--api-token-env", "ACME_PD_TOKEN",
                         "--from", "ops@example.com")
    assert code == 0, err
    code, out, err = run(capsys, "destinations", "show", "acme")
    assert code == 0, err
    assert "service PABC123 at https://api.pagerduty.com" in out
    assert f"sha256 {fingerprint(TOKEN)}" in out and "from ops@example.com" in out
    code, out2, err2 = run(capsys, "destinations", "update", "acme", "--service-id", "")
    assert code == 0, err2
    assert "pagerduty rest: none" in out2
    both = run(capsys, "destinations", "update", "acme", "--routing-key-stdin",
               "--api-token-stdin")
    assert both[0] != 0 and "standard input holds one secret" in both[2]
    for text in (out, err, out2, err2, *both[1:]):
        assert TOKEN not in text
    assert TOKEN not in repr(our_keys(redis_conn, prefix))


def test_config_check_and_status_verify_credentials_at_the_simulator(
        client: httpx.Client, sim, cli_env: Path, key_ring: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from simulator import DEMO_API_TOKEN

    cli_env.write_text(cli_env.read_text(encoding="utf-8") + (
        'pagerduty_service_id = "PSIMSVC"\npagerduty_api_token_env = "PD_API_TOKEN"\n'
        f'pagerduty_api_url = "{sim.rest_url}"\n'), encoding="utf-8")  # on `staging`
    monkeypatch.setenv("PD_API_TOKEN", DEMO_API_TOKEN)
    monkeypatch.setenv("MONITAO_PD_REST_CA_FILE", sim.ca_file)
    monkeypatch.setenv("MONITAO_PD_SECRET_KEYS", key_ring)
    code, out, err = run(capsys, "config", "check")
    assert code == 0, err
    assert "pagerduty rest: staging: service PSIMSVC: OK" in out

    # a run-time destination whose token PagerDuty refuses, one whose service is unknown
    for name, service, token in (("acme", "PSIMSVC", TOKEN), ("beta", "PNOSUCH", None)):
        added = client.post("/v1/destinations", json={
            "name": name, "routing_key": random_routing_key(), "events_url": sim.events_url,
            "pagerduty_service_id": service, "pagerduty_api_token": token or DEMO_API_TOKEN,
            "pagerduty_api_url": sim.rest_url})
        assert added.status_code == 201, added.text
    code, out, err = run(capsys, "config", "check")
    assert code != 0
    assert "acme: service PSIMSVC: GET /services/PSIMSVC: HTTP 401, the API token is not " \
           "valid" in err
    assert "beta: service PNOSUCH: GET /services/PNOSUCH: HTTP 404" in err
    assert "staging: service PSIMSVC: OK" in out

    code, out, err = run(capsys, "status", "--no-ping")
    assert "pagerduty rest" in out and "1 of 3 destination(s) OK" in out
    assert "acme: service PSIMSVC: GET /services/PSIMSVC: HTTP 401" in out
    status = client.get("/v1/status", params={"ping": "false"}).json()
    assert status["rest_credentials"]["acme"]["ok"] is False
    assert status["rest_credentials"]["beta"]["problem"].startswith(
        "GET /services/PNOSUCH: HTTP 404")
    for text in (out, err, json.dumps(status)):
        assert TOKEN not in text and DEMO_API_TOKEN not in text
