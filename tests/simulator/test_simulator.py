"""The PagerDuty simulator, exercised over real HTTP on loopback."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7

from simulator import Faults, Simulator

KEY = "R" * 32
OTHER_KEY = "S" * 32
REPO = Path(__file__).resolve().parents[2]
SCHEMA_URI = "urn:pagerduty:events-v2"
ENQUEUE_SCHEMA = "/paths/~1enqueue/post/requestBody/content/application~1json/schema"


def _pagerduty_schema() -> Draft7Validator:
    """PagerDuty's own schema of a /v2/enqueue body, refs resolved against the whole document."""
    document = json.loads((REPO / "tests" / "data" / "events-v2.openapi.json").read_text())
    registry = Registry().with_resource(SCHEMA_URI, DRAFT7.create_resource(document))
    return Draft7Validator({"$ref": f"{SCHEMA_URI}#{ENQUEUE_SCHEMA}"}, registry=registry)


PAGERDUTY_SCHEMA = _pagerduty_schema()


@pytest.fixture
def schema() -> Draft7Validator:
    return PAGERDUTY_SCHEMA


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(seed=7).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as http:
        yield http


def trigger(dedup_key: str | None = "disk-full", key: str = KEY, **payload: Any) -> dict:
    body: dict[str, Any] = {
        "routing_key": key,
        "event_action": "trigger",
        "payload": {"summary": "Disk full on db-1", "source": "db-1", "severity": "error"}
        | payload,
    }
    if dedup_key is not None:
        body["dedup_key"] = dedup_key
    return body


def follow_up(action: str, dedup_key: str = "disk-full", key: str = KEY) -> dict:
    return {"routing_key": key, "event_action": action, "dedup_key": dedup_key}


MONITAO_EXAMPLE = {
    "routing_key": KEY,
    "event_action": "trigger",
    "dedup_key": "monitao-monitor-123-incident-456",
    "payload": {
        "summary": "[DOWN] example.com - HTTP 503",
        "source": "MoniTao",
        "severity": "critical",
        "timestamp": "2026-03-01T12:00:00Z",
        "component": "example.com",
        "group": "production",
        "class": "http",
        "custom_details": {
            "monitor_name": "example.com",
            "url": "https://example.com",
            "status_code": 503,
            "response_time_ms": 1234,
            "check_location": "eu-west",
            "incident_url": "https://app.monitao.example/incidents/456",
        },
    },
    "client": "MoniTao",
    "client_url": "https://app.monitao.example/incidents/456",
    "links": [{"href": "https://app.monitao.example/monitors/123", "text": "Monitor"}],
    "images": [{"src": "https://app.monitao.example/chart.png", "alt": "Response times"}],
}

VALID_BODIES = {
    "plain": trigger(),
    "no-dedup": trigger(dedup_key=None),
    "monitao": MONITAO_EXAMPLE,
    "limits": trigger(summary="x" * 1024, dedup_key="d" * 255, timestamp="2026-03-01T12:00:00Z"),
    "offset-timestamp": trigger(timestamp="2015-07-17T08:42:58.315+0000"),
    "acknowledge": follow_up("acknowledge"),
    "resolve": follow_up("resolve"),
}


def post(client: httpx.Client, body: Any) -> httpx.Response:
    """Send one event; whatever the simulator accepts must also pass PagerDuty's schema."""
    response = client.post("/v2/enqueue", json=body)
    if response.status_code == 202:
        assert list(PAGERDUTY_SCHEMA.iter_errors(body)) == []
    return response


# --- ingest semantics -------------------------------------------------------------------------


def test_valid_trigger_is_accepted_and_opens_an_incident(client: httpx.Client, sim: Simulator):
    response = post(client, trigger())

    assert response.status_code == 202
    assert response.json() == {
        "status": "success",
        "message": "Event processed",
        "dedup_key": "disk-full",
    }
    [incident] = sim.incidents()
    assert incident["status"] == "triggered"
    assert incident["number"] == 1
    assert (incident["summary"], incident["severity"]) == ("Disk full on db-1", "error")
    assert incident["history"] == ["trigger"]
    [event] = sim.received()
    assert event["seq"] == 1
    assert event["body"]["routing_key"] == "***"
    assert event["dropped"] is False


@pytest.mark.parametrize("body", VALID_BODIES.values(), ids=VALID_BODIES.keys())
def test_valid_bodies_pass_pagerduty_schema_and_simulator(
    body: dict, schema: Draft7Validator, client: httpx.Client
):
    assert list(schema.iter_errors(body)) == []
    assert client.post("/v2/enqueue", json=body).status_code == 202


def test_monitao_example_is_stored_as_sent(client: httpx.Client, sim: Simulator):
    assert post(client, MONITAO_EXAMPLE).status_code == 202

    [event] = sim.received()
    assert event["dedup_key"] == "monitao-monitor-123-incident-456"
    assert event["body"] == {**MONITAO_EXAMPLE, "routing_key": "***"}
    [incident] = sim.incidents()
    assert incident["summary"] == "[DOWN] example.com - HTTP 503"
    assert incident["severity"] == "critical"


def test_trigger_without_dedup_key_gets_a_generated_one(client: httpx.Client, sim: Simulator):
    response = post(client, trigger(dedup_key=None))

    generated = response.json()["dedup_key"]
    assert len(generated) == 32
    assert sim.incidents()[0]["dedup_key"] == generated
    assert post(client, trigger(dedup_key=None)).json()["dedup_key"] != generated


def test_trigger_then_resolve_resolves(client: httpx.Client, sim: Simulator):
    post(client, trigger())
    assert post(client, follow_up("resolve")).status_code == 202

    [incident] = sim.incidents()
    assert incident["status"] == "resolved"
    assert incident["history"] == ["trigger", "resolve"]


def test_trigger_on_open_incident_is_appended(client: httpx.Client, sim: Simulator):
    post(client, trigger())
    post(client, trigger(summary="Disk still full", severity="critical"))

    [incident] = sim.incidents()
    assert (incident["events"], incident["summary"], incident["status"]) == (
        2,
        "Disk still full",
        "triggered",
    )


def test_trigger_after_resolve_opens_incident_number_two(client: httpx.Client, sim: Simulator):
    post(client, trigger())
    post(client, follow_up("resolve"))
    post(client, trigger())

    first, second = sim.incidents()
    assert (first["number"], first["status"]) == (1, "resolved")
    assert (second["number"], second["status"]) == (2, "triggered")


def test_resolve_for_unknown_key_is_accepted_but_dropped(client: httpx.Client, sim: Simulator):
    response = post(client, follow_up("resolve", dedup_key="never-triggered"))

    assert response.status_code == 202
    assert response.json()["dedup_key"] == "never-triggered"
    assert sim.incidents() == []
    [event] = sim.received()
    assert event["dropped"] is True


def test_follow_up_only_acts_on_its_own_routing_key(client: httpx.Client, sim: Simulator):
    post(client, trigger())
    post(client, follow_up("resolve", key=OTHER_KEY))

    assert sim.incidents()[0]["status"] == "triggered"
    assert [e["dropped"] for e in sim.received()] == [False, True]


def test_acknowledge_sticks_through_later_triggers(client: httpx.Client, sim: Simulator):
    post(client, trigger())
    assert post(client, follow_up("acknowledge")).status_code == 202
    assert sim.incidents()[0]["status"] == "acknowledged"

    post(client, trigger())
    [incident] = sim.incidents()
    assert incident["status"] == "acknowledged"
    assert incident["history"] == ["trigger", "acknowledge", "trigger"]


# --- validation -------------------------------------------------------------------------------


def test_every_broken_rule_is_reported(client: httpx.Client, sim: Simulator):
    body = {
        "routing_key": "R" * 31,
        "event_action": "trigger",
        "dedup_key": "d" * 256,
        "payload": {"summary": "s" * 1025, "severity": "fatal"},
    }

    response = post(client, body)

    assert response.status_code == 400
    answer = response.json()
    assert (answer["status"], answer["message"]) == ("invalid event", "Event object is invalid")
    errors = answer["errors"]
    assert "'routing_key' must be 32 characters" in errors
    assert "'dedup_key' is longer than 255 characters" in errors
    assert "'payload.summary' is longer than 1024 characters" in errors
    assert "'payload.source' is required" in errors
    assert any(e.startswith("'payload.severity'") for e in errors)
    assert len(errors) == 5
    assert sim.received() == [] and sim.incidents() == []
    assert [r["status"] for r in sim.requests()] == [400]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in trigger().items() if k != "routing_key"}, "'routing_key'"),
        (trigger() | {"event_action": "escalate"}, "'event_action'"),
        ({k: v for k, v in trigger().items() if k != "payload"}, "'payload'"),
        ({"routing_key": KEY, "event_action": "resolve"}, "'dedup_key'"),
        ({"routing_key": KEY, "event_action": "acknowledge"}, "'dedup_key'"),
        (trigger(summary=""), "'payload.summary'"),
        (trigger(source=""), "'payload.source'"),
        (trigger(timestamp="yesterday"), "'payload.timestamp'"),
        (trigger(component=5), "'payload.component'"),
        (trigger(custom_details="text"), "'payload.custom_details'"),
        (trigger() | {"images": [{"src": "http://plain.example/a.png"}]}, "'images[0].src'"),
        (trigger() | {"links": [{"text": "no href"}]}, "'links[0].href'"),
        (trigger() | {"client_url": 7}, "'client_url'"),
    ],
)
def test_single_broken_rule_is_named(body: dict, field: str, client: httpx.Client):
    response = post(client, body)

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error.startswith(field)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe"])
def test_body_that_is_not_a_json_object_is_unrecognized(raw: bytes, client: httpx.Client):
    response = client.post("/v2/enqueue", content=raw)

    assert response.status_code == 400
    assert response.json() == {
        "status": "Unrecognized object",
        "message": "Event object format is unrecognized",
        "errors": ["JSON parse error"],
    }


def _padded_body(size: int) -> bytes:
    body = trigger(custom_details={"pad": ""})
    overhead = len(json.dumps(body).encode())
    body["payload"]["custom_details"]["pad"] = "p" * (size - overhead)
    raw = json.dumps(body).encode()
    assert len(raw) == size
    return raw


def test_body_over_512000_bytes_is_rejected(client: httpx.Client, sim: Simulator):
    response = client.post("/v2/enqueue", content=_padded_body(512_001))

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert "512001" in error and "512000" in error
    assert sim.received() == []


def test_body_of_exactly_512000_bytes_is_accepted(client: httpx.Client):
    raw = _padded_body(512_000)
    assert client.post("/v2/enqueue", content=raw).status_code == 202
    assert list(PAGERDUTY_SCHEMA.iter_errors(json.loads(raw))) == []


@pytest.mark.parametrize(
    "body",
    [
        trigger(severity="fatal"),
        trigger() | {"event_action": "escalate"},
        {"event_action": "trigger", "payload": trigger()["payload"]},
        trigger() | {"payload": {"source": "db-1", "severity": "info"}},
        trigger() | {"images": [{"alt": "no src"}]},
        trigger() | {"links": [{"text": "no href"}]},
        trigger() | {"dedup_key": 42},
    ],
)
def test_body_pagerduty_schema_rejects_is_rejected(
    body: dict, schema: Draft7Validator, client: httpx.Client
):
    assert list(schema.iter_errors(body)) != []
    assert post(client, body).status_code == 400


# --- rate limit and faults --------------------------------------------------------------------


def test_rate_limit_throttles_one_routing_key_only(client: httpx.Client, sim: Simulator):
    sim.faults.rate_limit = 3
    statuses = [post(client, trigger(dedup_key=f"k{i}")).status_code for i in range(4)]

    assert statuses == [202, 202, 202, 429]
    assert post(client, trigger(key=OTHER_KEY)).status_code == 202
    assert client.post("/v2/enqueue", json=trigger(dedup_key="k9")).json() == {
        "status": "throttle event",
        "message": "Requests for this service are arriving too quickly. Please retry later.",
    }
    assert [e["dedup_key"] for e in sim.received()] == ["k0", "k1", "k2", "disk-full"]
    assert [i["dedup_key"] for i in sim.incidents()] == ["k0", "k1", "k2", "disk-full"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_window_slides_over_60_seconds():
    clock = FakeClock()
    with Simulator(faults=Faults(rate_limit=2), clock=clock) as sim, httpx.Client() as http:

        def send() -> int:
            return http.post(sim.events_url, json=trigger()).status_code

        assert [send(), send(), send()] == [202, 202, 429]
        clock.now += 59.9
        assert send() == 429
        clock.now += 0.2
        # Throttled events did not count, so the window holds nothing now.
        assert [send(), send(), send()] == [202, 202, 429]


def test_error_rate_one_answers_500_without_ingesting(client: httpx.Client, sim: Simulator):
    sim.set_faults(error_rate=1.0)
    response = post(client, trigger())

    assert response.status_code == 500
    assert response.json() == {"status": "error", "message": "internal server error"}
    sim.set_faults(error_status=502)
    assert post(client, trigger()).status_code == 502
    assert sim.received() == [] and sim.incidents() == []
    assert [r["status"] for r in sim.requests()] == [500, 502]


def test_fail_next_fails_that_many_then_recovers(client: httpx.Client, sim: Simulator):
    sim.faults.fail_next = 2
    statuses = [post(client, trigger()).status_code for _ in range(3)]

    assert statuses == [500, 500, 202]
    assert sim.faults.fail_next == 0
    assert len(sim.received()) == 1


def test_force_status_answers_every_request(client: httpx.Client, sim: Simulator):
    sim.set_faults(force_status=503)
    assert post(client, trigger()).status_code == 503
    assert client.post("/v2/enqueue", content=b"garbage").status_code == 503
    sim.set_faults(force_status=None)
    assert post(client, trigger()).status_code == 202
    assert len(sim.received()) == 1


def test_error_body_answers_forced_errors_echoing_the_routing_key(
    client: httpx.Client, sim: Simulator
):
    sim.set_faults(force_status=400, error_body={
        "message": "Invalid key {routing_key}\nsecond line",
        "errors": ["key '{routing_key}' unknown", {"key": "{routing_key}"}, 7]})
    answer = post(client, trigger())
    assert answer.status_code == 400
    assert answer.json() == {"message": f"Invalid key {KEY}\nsecond line",
                             "errors": [f"key '{KEY}' unknown", {"key": KEY}, 7]}
    garbage = client.post("/v2/enqueue", content=b"garbage").json()
    assert garbage["message"] == "Invalid key \nsecond line"  # no key was sent
    sim.set_faults(force_status=None, fail_next=1, error_status=503)
    assert post(client, trigger()).json()["errors"][0] == f"key '{KEY}' unknown"
    sim.set_faults(error_body=None)
    assert post(client, trigger()).status_code == 202
    with pytest.raises(ValueError, match="error_body"):
        sim.set_faults(error_body=["not", "an object"])


def test_drop_connections_closes_without_answer(client: httpx.Client, sim: Simulator):
    sim.set_faults(drop_connections=True)
    with pytest.raises(httpx.TransportError):
        post(client, trigger())

    sim.set_faults(drop_connections=False)
    assert post(client, trigger()).status_code == 202
    assert [r["status"] for r in sim.requests()] == [None, 202]
    assert len(sim.received()) == 1


def test_latency_delays_every_answer(client: httpx.Client, sim: Simulator):
    sim.set_faults(latency_ms=200)
    for body in (trigger(), {"event_action": "trigger"}):
        started = time.monotonic()
        post(client, body)
        assert time.monotonic() - started >= 0.2


def test_latency_is_slept_concurrently(sim: Simulator):
    sim.set_faults(latency_ms=300, rate_limit=None)

    def send(i: int) -> int:
        with httpx.Client(timeout=10) as http:
            return http.post(sim.events_url, json=trigger(dedup_key=f"k{i}")).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(send, range(20)))
    elapsed = time.monotonic() - started

    assert statuses == [202] * 20
    assert elapsed < 3.0  # one at a time would take 6 s
    assert sorted(e["seq"] for e in sim.received()) == list(range(1, 21))


def test_set_faults_rejects_unknown_names_and_bad_values(sim: Simulator):
    with pytest.raises(ValueError, match="bogus"):
        sim.set_faults(bogus=1)
    with pytest.raises(ValueError, match="error_rate"):
        sim.set_faults(error_rate=1.5)
    with pytest.raises(ValueError, match="fail_next"):
        sim.set_faults(fail_next=True)
    assert sim.faults == Faults()


# --- control endpoints ------------------------------------------------------------------------


def test_faults_endpoint_reads_and_changes_faults(client: httpx.Client, sim: Simulator):
    assert client.get("/_sim/faults").json()["rate_limit"] == 120

    response = client.post("/_sim/faults", json={"force_status": 429, "latency_ms": 5})

    assert response.status_code == 200
    assert response.json()["force_status"] == 429
    assert (sim.faults.force_status, sim.faults.latency_ms) == (429, 5.0)
    assert client.get("/_sim/faults").json() == response.json()
    assert post(client, trigger()).status_code == 429


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"latency_ms": 1, "explode": True}, "explode"),
        ({"error_rate": "high"}, "error_rate"),
        ({"rate_limit": -1}, "rate_limit"),
        ({"force_status": 42}, "force_status"),
        ({"drop_connections": 1}, "drop_connections"),
    ],
)
def test_faults_endpoint_rejects_bad_changes(
    changes: dict, named: str, client: httpx.Client, sim: Simulator
):
    response = client.post("/_sim/faults", json=changes)

    assert response.status_code == 400
    assert named in response.json()["errors"][0]
    assert sim.faults == Faults()


def test_event_and_incident_endpoints_filter_by_dedup_key(client: httpx.Client):
    post(client, trigger(dedup_key="a"))
    post(client, trigger(dedup_key="b"))
    post(client, follow_up("resolve", dedup_key="a"))

    events = client.get("/_sim/events", params={"dedup_key": "a"}).json()
    assert [e["event_action"] for e in events] == ["trigger", "resolve"]
    assert len(client.get("/_sim/events").json()) == 3
    [incident] = client.get("/_sim/incidents", params={"dedup_key": "a"}).json()
    assert incident["status"] == "resolved"
    requests = client.get("/_sim/requests").json()
    assert [(r["seq"], r["status"], r["event_action"]) for r in requests] == [
        (1, 202, "trigger"),
        (2, 202, "trigger"),
        (3, 202, "resolve"),
    ]


def test_reset_clears_state_and_faults(client: httpx.Client, sim: Simulator):
    sim.set_faults(rate_limit=1, latency_ms=1)
    post(client, trigger())
    assert post(client, trigger()).status_code == 429

    assert client.post("/_sim/reset").json() == {"ok": True}

    assert sim.received() == [] and sim.requests() == [] and sim.incidents() == []
    assert sim.faults == Faults()
    sim.set_faults(rate_limit=1)
    assert post(client, trigger()).status_code == 202  # the rate window was emptied too
    assert sim.incidents()[0]["number"] == 1


def test_health_and_unknown_routes(client: httpx.Client):
    assert client.get("/_sim/health").json() == {"ok": True}
    assert client.get("/v2/enqueue").status_code == 404
    missing = client.post("/v2/change/enqueue", json={})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert client.delete("/_sim/events").status_code == 404


def test_routing_key_never_appears_in_outputs(client: httpx.Client, sim: Simulator):
    short_key = "Q" * 20
    post(client, trigger())
    post(client, follow_up("resolve"))
    post(client, trigger(key=short_key))
    sim.faults.rate_limit = 0
    post(client, trigger())

    texts = [client.get(f"/_sim/{name}").text for name in ("events", "requests", "incidents")]
    texts.append(json.dumps([sim.received(), sim.requests(), sim.incidents()]))
    for text in texts:
        assert KEY not in text and short_key not in text
    assert {r["routing_key_hash"] for r in sim.requests()} == {
        sim.incidents()[0]["routing_key_hash"],
        sim.requests()[2]["routing_key_hash"],
    }


# --- HTTP plumbing and lifecycle --------------------------------------------------------------


def test_missing_content_length_is_an_empty_body_and_keep_alive_works(sim: Simulator):
    port = int(sim.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"POST /v2/enqueue HTTP/1.1\r\nHost: sim\r\n\r\n")
        first = http.client.HTTPResponse(conn)
        first.begin()
        assert (first.status, json.loads(first.read())["status"]) == (400, "Unrecognized object")

        raw = json.dumps(trigger()).encode()
        head = f"POST /v2/enqueue HTTP/1.1\r\nHost: sim\r\nContent-Length: {len(raw)}\r\n\r\n"
        conn.sendall(head.encode() + raw)
        second = http.client.HTTPResponse(conn)
        second.begin()
        assert second.status == 202
        assert second.getheader("Connection") != "close"


def test_stop_closes_listener_and_keep_alive_connections():
    sim = Simulator().start()
    with httpx.Client(base_url=sim.url, timeout=5) as http:
        assert post(http, trigger()).status_code == 202
        sim.stop()
        with pytest.raises(httpx.TransportError):
            post(http, trigger())
    sim.stop()  # stopping twice is harmless


def test_url_requires_a_running_simulator():
    sim = Simulator()
    with pytest.raises(RuntimeError):
        _ = sim.url
    with sim:
        assert sim.events_url == sim.url + "/v2/enqueue"
        assert sim.url.startswith("http://127.0.0.1:")


def test_serve_prints_its_address_and_stops_on_sigterm():
    code = "from simulator import Faults, serve; serve('127.0.0.1', 0, Faults(latency_ms=1))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        # a bounded read: a simulator that never prints fails the test instead of hanging it
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the simulator printed nothing within 20 s"
        line = proc.stdout.readline().strip()
        assert line.startswith("PagerDuty simulator listening on http://127.0.0.1:")
        base = line.rsplit(" ", 1)[1]
        assert httpx.get(base + "/_sim/faults", timeout=5).json()["latency_ms"] == 1.0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
