"""The simulator's REST API v2, driven by PagerDuty's own client over real HTTPS."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pagerduty
import pytest

import simulator.server
from simulator import DEMO_API_TOKEN, Simulator
from tests.conftest import random_routing_key, wait_until
from tests.simulator.collector import Collector, serving

FROM = "ops@example.com"
REPO = Path(__file__).resolve().parents[2]


def make_client(sim: Simulator, token: str = DEMO_API_TOKEN) -> pagerduty.RestApiV2Client:
    client = pagerduty.RestApiV2Client(token, base_url=sim.rest_url,
                                       verify=sim.client_ssl_context(), default_from=FROM)
    client.sleep_timer = 0.05  # the client waits 1.5 s and more between retries by default
    client.max_http_attempts = 3
    client.max_network_attempts = 1
    return client


@pytest.fixture
def client(sim: Simulator) -> Iterator[pagerduty.RestApiV2Client]:
    with make_client(sim) as rest:
        yield rest


def at(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


def window(start: float, end: float, *services: str, description: str = "deploy"
           ) -> dict[str, Any]:
    return {"maintenance_window": {
        "type": "maintenance_window", "start_time": at(start), "end_time": at(end),
        "description": description,
        "services": [{"id": s, "type": "service_reference"} for s in services or ("PSIMSVC",)],
    }}


def subscription(url: str, service: str, events: list[str]) -> dict[str, Any]:
    return {"webhook_subscription": {
        "type": "webhook_subscription",
        "delivery_method": {"type": "http_delivery_method", "url": url},
        "events": events, "filter": {"type": "service_reference", "id": service},
        "description": "monitao",
    }}


def trigger(sim: Simulator, key: str, dedup_key: str) -> None:
    answer = httpx.post(sim.events_url, json={
        "routing_key": key, "event_action": "trigger", "dedup_key": dedup_key,
        "payload": {"summary": "disk full", "source": "web-1", "severity": "critical"}})
    assert answer.status_code == 202


@pytest.fixture
def receiver() -> Iterator[Collector]:
    with serving() as server:
        yield server


# Authentication


def test_a_wrong_token_is_refused_with_401_and_never_recorded(sim: Simulator):
    with make_client(sim, "not-a-known-token") as wrong, pytest.raises(
            pagerduty.HttpError) as refused:
        wrong.rget("/services/PSIMSVC")
    assert refused.value.response.status_code == 401
    assert refused.value.response.json() == {"error": {"message": "Unauthorized",
                                                       "code": 2006}}
    [logged] = sim.rest_requests()
    assert logged["token_ok"] is False and logged["status"] == 401 and logged["from"] == FROM
    assert logged["token_hash"] == hashlib.sha256(b"not-a-known-token").hexdigest()[:12]
    assert "not-a-known-token" not in json.dumps(sim.rest_requests())

    # without any Authorization header, and without PagerDuty's Accept header
    anonymous = httpx.get(sim.rest_url + "/services/PSIMSVC", verify=sim.client_ssl_context())
    assert anonymous.status_code == 401

    sim.add_rest_token("not-a-known-token")
    with make_client(sim, "not-a-known-token") as now_known:
        assert now_known.rget("/services/PSIMSVC")["id"] == "PSIMSVC"
    assert sim.rest_requests()[-1]["token_ok"] is True


def test_tokens_given_at_construction_replace_the_demo_one():
    with Simulator(rest_tokens=["tok-A"]) as sim:
        with make_client(sim, "tok-A") as known:
            assert known.rget("/services/PSIMSVC")["status"] == "active"
        with make_client(sim, DEMO_API_TOKEN) as demo, pytest.raises(pagerduty.HttpError):
            demo.rget("/services/PSIMSVC")
        added = httpx.post(sim.url + "/_sim/rest/tokens", json={"token": "tok-B"})
        assert added.json() == {"ok": True}
        with make_client(sim, "tok-B") as second:
            assert second.rget("/services/PSIMSVC")["id"] == "PSIMSVC"


# Services and incidents


def test_services_default_added_and_unknown(sim: Simulator, client: pagerduty.RestApiV2Client):
    service = client.rget("/services/PSIMSVC")
    assert service["type"] == "service" and service["name"] == "Simulated service"
    assert service["status"] == "active"
    added = sim.add_service("PABC123", name="Checkout")
    assert added["id"] == "PABC123"
    assert client.rget("/services/PABC123")["summary"] == "Checkout"
    missing = client.get("/services/PNOPE00")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"message": "Not Found", "code": 2100}}
    assert {s["id"] for s in client.iter_all("/services")} == {"PSIMSVC", "PABC123"}


def test_an_incident_of_the_events_api_is_readable_with_its_incident_key(
        sim: Simulator, client: pagerduty.RestApiV2Client):
    key = random_routing_key()
    sim.add_service("PCHK001", name="Checkout", routing_key=key)
    trigger(sim, key, "monitao-monitor-7-incident-9")
    trigger(sim, random_routing_key(), "elsewhere")
    mine, other = sim.incidents()
    incident = client.rget(f"/incidents/{mine['id']}")
    assert incident["id"] == mine["id"] and incident["type"] == "incident"
    assert incident["incident_key"] == "monitao-monitor-7-incident-9"
    assert incident["status"] == "triggered" and incident["title"] == "disk full"
    assert incident["service"]["id"] == "PCHK001"
    assert incident["service"]["type"] == "service_reference"
    assert client.rget(f"/incidents/{other['id']}")["service"]["id"] == "PSIMSVC"
    sim.respond("monitao-monitor-7-incident-9", "acknowledge")
    assert client.rget(f"/incidents/{mine['id']}")["status"] == "acknowledged"
    assert client.get("/incidents/PSIM999999").status_code == 404


# Maintenance windows


def test_window_create_list_get_update(sim: Simulator, client: pagerduty.RestApiV2Client):
    sim.add_service("POTHER1", name="Other")
    created = client.post("/maintenance_windows", json=window(60, 120, description="deploy"))
    assert created.status_code == 201
    future = created.json()["maintenance_window"]
    assert future["id"].startswith("P") and len(future["id"]) == 7 and future["id"].isupper()
    assert future["type"] == "maintenance_window" and future["created_by"] is None
    assert future["services"][0]["id"] == "PSIMSVC"
    assert future["services"][0]["type"] == "service_reference"
    ongoing = client.rpost("/maintenance_windows", json=window(-5, 30, "POTHER1"))

    assert [w["id"] for w in client.iter_all(
        "/maintenance_windows", params={"service_ids": ["PSIMSVC"]})] == [future["id"]]
    assert [w["id"] for w in client.iter_all(
        "/maintenance_windows", params={"filter": "ongoing"})] == [ongoing["id"]]
    assert [w["id"] for w in client.iter_all(
        "/maintenance_windows", params={"filter": "future"})] == [future["id"]]
    assert len(list(client.iter_all("/maintenance_windows",
                                    params={"filter": "no-such-filter"}))) == 2
    assert client.rget("/services/POTHER1")["status"] == "maintenance"

    page = client.get("/maintenance_windows", params={"limit": 1, "total": "true"}).json()
    assert page["more"] is True and page["total"] == 2 and page["limit"] == 1
    assert page["maintenance_windows"][0]["id"] == ongoing["id"]  # by start time
    assert client.get("/maintenance_windows").json()["total"] is None

    assert client.rget(f"/maintenance_windows/{future['id']}")["description"] == "deploy"
    updated = client.rput(f"/maintenance_windows/{future['id']}",
                          json={"maintenance_window": {"description": "longer deploy"}})
    assert updated["description"] == "longer deploy"
    assert updated["start_time"] == future["start_time"]  # fields not sent are kept
    new_end = at(240)
    moved = client.rput(f"/maintenance_windows/{future['id']}",
                        json={"maintenance_window": {"end_time": new_end}})
    assert datetime.fromisoformat(moved["end_time"]) == datetime.fromisoformat(new_end)
    assert client.get("/maintenance_windows/PNOPE00").status_code == 404


def test_window_delete_removes_a_future_one_and_ends_an_ongoing_one(
        sim: Simulator, client: pagerduty.RestApiV2Client):
    future = client.rpost("/maintenance_windows", json=window(60, 120))
    ongoing = client.rpost("/maintenance_windows", json=window(-10, 60))
    assert client.delete(f"/maintenance_windows/{future['id']}").status_code == 204
    assert client.get(f"/maintenance_windows/{future['id']}").status_code == 404

    before = datetime.now(UTC)
    assert client.delete(f"/maintenance_windows/{ongoing['id']}").status_code == 204
    ended = client.rget(f"/maintenance_windows/{ongoing['id']}")
    assert before <= datetime.fromisoformat(ended["end_time"]) <= datetime.now(UTC)
    [kept] = sim.maintenance_windows()
    assert kept["id"] == ongoing["id"] and kept["status"] == "ended"
    assert [w["id"] for w in client.iter_all("/maintenance_windows",
                                             params={"filter": "past"})] == [ongoing["id"]]
    assert list(client.iter_all("/maintenance_windows", params={"filter": "open"})) == []

    again = client.delete(f"/maintenance_windows/{ongoing['id']}")
    assert again.status_code == 405 and "already ended" in again.json()["error"]["errors"][0]
    update = client.put(f"/maintenance_windows/{ongoing['id']}",
                        json={"maintenance_window": {"description": "x"}})
    assert update.status_code == 405
    assert client.delete("/maintenance_windows/PNOPE00").status_code == 404


@pytest.mark.parametrize(("change", "problem"), [
    ({"start_time": "tomorrow at noon"}, "start_time must be an ISO 8601"),
    ({"end_time": 12}, "end_time must be an ISO 8601"),
    ({"end_time": at(-120)}, "end_time must be after start_time"),
    ({"start_time": at(-120), "end_time": at(-60)}, "end_time must be in the future"),
    ({"services": []}, "services must be a non-empty list"),
    ({"services": [{"id": "PNOPE00", "type": "service_reference"}]},
     "service 'PNOPE00' not found"),
    ({"type": "service"}, "type must be 'maintenance_window'"),
])
def test_window_validation_names_the_problem(sim: Simulator, client: pagerduty.RestApiV2Client,
                                             change: dict[str, Any], problem: str):
    body = window(10, 70)
    body["maintenance_window"].update(change)
    answer = client.post("/maintenance_windows", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["message"] == "Invalid Input Provided" and error["code"] == 2001
    assert any(problem in e for e in error["errors"]), error["errors"]
    assert sim.maintenance_windows() == []


def test_a_500_then_a_201_leaves_one_window(sim: Simulator, client: pagerduty.RestApiV2Client):
    sim.set_rest_faults(fail_next=1)
    client.retry = {500: 2}
    created = client.rpost("/maintenance_windows", json=window(10, 70))
    assert [w["id"] for w in sim.maintenance_windows()] == [created["id"]]
    assert [r["status"] for r in sim.rest_requests()] == [500, 201]
    assert sim.rest_faults.fail_next == 0


def test_rest_faults_leave_the_events_api_alone(sim: Simulator,
                                                client: pagerduty.RestApiV2Client):
    sim.set_rest_faults(force_status=503)
    assert client.get("/services/PSIMSVC").status_code == 503
    assert client.get("/services/PSIMSVC").json()["error"]["code"] == 2000
    trigger(sim, random_routing_key(), "still-served")  # asserts the 202
    sim.set_rest_faults(force_status=None, drop_connections=True)
    with pytest.raises(pagerduty.Error):
        client.get("/services/PSIMSVC")
    assert sim.rest_requests()[-1]["status"] is None
    sim.set_rest_faults(drop_connections=False, rate_limit=2)
    plain = {"Authorization": f"Token token={DEMO_API_TOKEN}"}
    with httpx.Client(base_url=sim.rest_url, verify=sim.client_ssl_context(),
                      headers=plain) as http:
        assert [http.get("/services/PSIMSVC").status_code for _ in range(3)] == [200, 200, 429]
        assert http.get("/services/PSIMSVC").json()["error"]["code"] == 2020
        sim.set_rest_faults(rate_limit=None, latency_ms=150)
        started = time.monotonic()
        assert http.get("/services/PSIMSVC").status_code == 200
        assert time.monotonic() - started >= 0.15
    assert sim.faults.force_status is None and sim.faults.latency_ms == 0


def test_sim_rest_control_endpoints(sim: Simulator, client: pagerduty.RestApiV2Client):
    assert httpx.post(sim.url + "/_sim/rest/faults", json={"fail_next": 1}).json()[
        "fail_next"] == 1
    bad = httpx.post(sim.url + "/_sim/rest/faults", json={"fail_next": "x"})
    assert bad.status_code == 400 and "fail_next" in bad.json()["errors"][0]
    assert client.get("/services/PSIMSVC").status_code == 500
    assert httpx.get(sim.url + "/_sim/rest/faults").json()["fail_next"] == 0
    service = httpx.post(sim.url + "/_sim/rest/services",
                         json={"id": "PWEB001", "name": "Web", "routing_key": "k" * 32}).json()
    assert service["name"] == "Web" and "k" * 32 not in json.dumps(service)
    client.rpost("/maintenance_windows", json=window(5, 10, "PWEB001"))
    [listed] = httpx.get(sim.url + "/_sim/rest/maintenance_windows").json()
    assert listed["services"][0]["id"] == "PWEB001" and listed["status"] == "future"
    logged = httpx.get(sim.url + "/_sim/rest/requests").json()
    assert [r["status"] for r in logged] == [500, 201]


def test_reset_forgets_rest_state_but_keeps_tokens_and_services(
        sim: Simulator, client: pagerduty.RestApiV2Client, receiver: Collector):
    sim.add_service("PKEEP01", name="Kept")
    sim.add_rest_token("kept-token")
    client.rpost("/maintenance_windows", json=window(5, 10))
    client.rpost("/webhook_subscriptions",
                 json=subscription(receiver.url, "PKEEP01", ["incident.triggered"]))
    sim.set_rest_faults(latency_ms=5)
    sim.reset()
    assert sim.maintenance_windows() == [] and sim.webhook_subscriptions() == []
    assert sim.rest_requests() == [] and sim.rest_faults.latency_ms == 0
    with make_client(sim, "kept-token") as kept:
        assert kept.rget("/services/PKEEP01")["name"] == "Kept"


# Webhook subscriptions


def test_a_subscription_shows_its_secret_once(sim: Simulator, client: pagerduty.RestApiV2Client,
                                              receiver: Collector):
    created = client.post("/webhook_subscriptions", json=subscription(
        receiver.url, "PSIMSVC", ["incident.triggered"]))
    assert created.status_code == 201
    made = created.json()["webhook_subscription"]
    secret = made["delivery_method"]["secret"]
    assert isinstance(secret, str) and len(secret) >= 32
    assert made["active"] is True and made["delivery_method"]["temporarily_disabled"] is False
    assert made["filter"] == {"type": "service_reference", "id": "PSIMSVC"}
    [listed] = client.iter_all("/webhook_subscriptions")
    assert listed["id"] == made["id"] and listed["delivery_method"]["secret"] is None
    one = client.rget(f"/webhook_subscriptions/{made['id']}")
    assert one["delivery_method"]["secret"] is None
    assert one["delivery_method"]["url"] == receiver.url
    observed = json.dumps([sim.webhook_subscriptions(), sim.rest_requests(),
                           httpx.get(sim.url + "/_sim/rest/webhook_subscriptions").json()])
    assert secret not in observed

    bad = client.post("/webhook_subscriptions", json=subscription("ftp://x", "PNOPE00", []))
    assert bad.status_code == 400
    assert len(bad.json()["error"]["errors"]) == 3  # url, events and filter, all named

    assert client.delete(f"/webhook_subscriptions/{made['id']}").status_code == 204
    assert client.get(f"/webhook_subscriptions/{made['id']}").status_code == 404
    assert client.delete(f"/webhook_subscriptions/{made['id']}").status_code == 404
    assert sim.webhook_subscriptions() == []


def test_webhooks_reach_a_subscription_signed_with_its_secret(
        sim: Simulator, client: pagerduty.RestApiV2Client, receiver: Collector):
    key = random_routing_key()
    sim.add_service("PSUB001", name="Subscribed", routing_key=key)
    made = client.rpost("/webhook_subscriptions", json=subscription(
        receiver.url, "PSUB001", ["incident.triggered", "incident.resolved"]))
    secret = made["delivery_method"]["secret"]

    trigger(sim, key, "mine")
    sim.respond("mine", "acknowledge")  # not a type it asked for
    trigger(sim, random_routing_key(), "not-mine")  # another service
    sim.respond("mine", "resolve")
    # one receiver is served in order: once the resolve is there, nothing else is coming
    wait_until(lambda: len(receiver.got) >= 2, timeout=10, message="two webhooks")
    with receiver.lock:
        got = list(receiver.got)
    assert len(got) == 2
    for raw, headers in got:
        expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        assert headers["x-pagerduty-signature"] == f"v1={expected}"
    events = [json.loads(raw)["event"] for raw, _ in got]
    assert [e["event_type"] for e in events] == ["incident.triggered", "incident.resolved"]
    assert {e["data"]["service"]["id"] for e in events} == {"PSUB001"}
    assert {e["data"]["incident_key"] for e in events} == {"mine"}
    assert {d["target"] for d in sim.webhook_deliveries()} == {made["id"]}


def test_webhooks_without_incident_key_when_asked(sim: Simulator,
                                                  client: pagerduty.RestApiV2Client,
                                                  receiver: Collector):
    client.rpost("/webhook_subscriptions", json=subscription(
        receiver.url, "PSIMSVC", ["incident.triggered", "incident.acknowledged"]))
    answer = httpx.post(sim.url + "/_sim/webhooks", json={"include_incident_key": False})
    assert answer.json()["include_incident_key"] is False
    trigger(sim, random_routing_key(), "no-key-please")
    [body] = wait_until(receiver.bodies, timeout=10, message="a webhook")
    assert "incident_key" not in body["event"]["data"]
    assert body["event"]["data"]["service"]["id"] == "PSIMSVC"

    sim.set_webhook(None, None, include_incident_key=True)
    sim.respond("no-key-please", "acknowledge")
    bodies = wait_until(lambda: receiver.bodies()[1:], timeout=10, message="the second")
    assert bodies[0]["event"]["data"]["incident_key"] == "no-key-please"
    assert httpx.post(sim.url + "/_sim/webhooks",
                      json={"include_incident_key": "no"}).status_code == 400


def test_the_configured_webhook_carries_the_incident_service(receiver: Collector):
    key = random_routing_key()
    with Simulator(webhook_url=receiver.url, webhook_secret="s3cret") as sim:
        sim.add_service("PCONF01", name="Configured", routing_key=key)
        trigger(sim, key, "configured")
        [body] = wait_until(receiver.bodies, timeout=10, message="a webhook")
    assert body["event"]["data"]["service"]["id"] == "PCONF01"
    assert body["event"]["data"]["service"]["summary"] == "Configured"


# Listeners


def test_a_silent_tls_client_holds_up_no_one(sim: Simulator,
                                             client: pagerduty.RestApiV2Client):
    assert simulator.server.HANDSHAKE_TIMEOUT_SECONDS >= 5  # far past the deadline below
    port = int(sim.rest_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as silent, \
            socket.create_connection(("127.0.0.1", port)) as garbled:
        garbled.sendall(b"GET / HTTP/1.1\r\n\r\n")  # plain HTTP to the TLS port
        started = time.monotonic()
        assert client.rget("/services/PSIMSVC")["id"] == "PSIMSVC"
        assert time.monotonic() - started < 2.0
        silent.sendall(b"")


def test_the_server_gives_up_a_handshake_after_its_timeout(monkeypatch: pytest.MonkeyPatch,
                                                           sim: Simulator):
    monkeypatch.setattr(simulator.server, "HANDSHAKE_TIMEOUT_SECONDS", 0.3)
    port = int(sim.rest_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as silent:
        ready, _, _ = select.select([silent], [], [], 5.0)
        assert ready, "the silent connection was still open after 5 s"
        assert silent.recv(1) == b""


def test_the_plain_listener_serves_the_events_api_and_rest(sim: Simulator):
    assert sim.url.startswith("http://") and sim.rest_url.startswith("https://127.0.0.1:")
    trigger(sim, random_routing_key(), "plain")
    assert sim.received()[0]["dedup_key"] == "plain"
    answer = httpx.get(sim.url + "/services/PSIMSVC",
                       headers={"Authorization": f"Token token={DEMO_API_TOKEN}"})
    assert answer.json()["service"]["id"] == "PSIMSVC"
    with pytest.raises(httpx.ConnectError):  # the HTTPS one needs the CA
        httpx.get(sim.rest_url + "/services/PSIMSVC")


def test_without_rest_there_is_no_https_listener():
    with Simulator(rest=False) as sim:
        with pytest.raises(RuntimeError):
            _ = sim.rest_url
        trigger(sim, random_routing_key(), "events-only")
    ca_dir = None
    with Simulator() as sim:
        ca_dir = Path(sim.ca_file).parent
        assert Path(sim.ca_file).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert not ca_dir.exists()  # the throwaway CA goes with the simulator


def test_serve_prints_the_rest_address_and_ca():
    code = "from simulator import Faults, serve; serve('127.0.0.1', 0, Faults())"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        out = b""
        deadline = time.monotonic() + 20
        while out.count(b"\n") < 3:  # unbuffered reads: select sees no Python buffer
            ready, _, _ = select.select([proc.stdout], [], [], max(0, deadline - time.monotonic()))
            assert ready, f"the simulator printed only {out!r}"
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"the simulator exited after {out!r}"
            out += chunk
        lines = out.decode().splitlines()
        assert lines[0].startswith("PagerDuty simulator listening on http://127.0.0.1:")
        rest_url, ca_file = lines[1].rsplit(" ", 1)[1], lines[2].rsplit(" ", 1)[1]
        answer = httpx.get(rest_url + "/services/PSIMSVC",
                           verify=ssl.create_default_context(cafile=ca_file),
                           headers={"Authorization": f"Token token={DEMO_API_TOKEN}"})
        assert answer.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
