"""`POST /v1/events` and `/v1/events/batch`: enqueued as send() and send_many() enqueue,
delivered by the fleet, idempotent by event_id, refused with send()'s own messages."""

from __future__ import annotations

import json

import httpx

from tests.api.conftest import problems
from tests.cli.operate.support import event
from tests.conftest import Fleet
from worker import timeline


def test_one_event_is_accepted_then_delivered(client: httpx.Client, fleet: Fleet) -> None:
    response = client.post("/v1/events", json=event(1, 10, "trigger"))
    assert response.status_code == 202
    event_id = response.json()["event_id"]
    assert fleet.wait_final([event_id]) == {event_id: "delivered"}
    [sent] = [e for e in fleet.sim.received()
              if e["dedup_key"] == "monitao-monitor-1-incident-10"]
    assert sent["event_action"] == "trigger"


def test_an_event_id_already_accepted_is_a_no_op(client: httpx.Client, fleet: Fleet) -> None:
    body = event(1, 11, "trigger", event_id="api-evt-1")
    first = client.post("/v1/events", json=body)
    again = client.post("/v1/events", json=dict(body, summary="changed"))
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() == {"event_id": "api-evt-1"}
    fleet.wait_final(["api-evt-1"])
    stages = [e["stage"] for e in timeline.read(fleet.redis, fleet.keys, "11")]
    assert stages.count("enqueued") == 1


def test_a_batch_is_all_or_nothing_in_order(client: httpx.Client, fleet: Fleet) -> None:
    events = [event(2, 20, "trigger"), event(2, 20, "resolve"), event(2, 21, "trigger")]
    response = client.post("/v1/events/batch", json={"events": events})
    assert response.status_code == 202
    ids = response.json()["event_ids"]
    assert len(ids) == 3
    assert set(fleet.wait_final(ids).values()) == {"delivered"}
    assert [e["event_action"] for e in fleet.sim.received()
            if e["dedup_key"] == "monitao-monitor-2-incident-20"] == ["trigger", "resolve"]

    refused = client.post("/v1/events/batch", json={"events": [
        event(3, 30, "trigger"), event(3, 31, "trigger", summary=None), {"action": "x"}]})
    assert refused.status_code == 422
    found = problems(refused)
    assert "event 1: summary: required for a trigger" in found
    assert any(p.startswith("event 2: action:") for p in found)
    assert fleet.redis.exists(fleet.keys.timeline("30")) == 0  # nothing was stored


def test_invalid_events_get_sends_messages_naming_each_field(
    client: httpx.Client, redis_conn, prefix: str
) -> None:
    response = client.post("/v1/events", json={"action": "trigger", "monitor_id": "1 2",
                                                "incident_id": "9", "colour": "red"})
    assert response.status_code == 422
    assert problems(response) == [  # every problem, as send() raises them, word for word
        "monitor_id: String should match pattern '^[A-Za-z0-9._:-]+$' (got '1 2')",
        "summary: required for a trigger", "colour: unknown field (got 'red')",
        "destination: required unless exactly one destination is configured (prod, staging)"]
    assert response.json()["detail"] == "invalid event"

    unknown = client.post("/v1/events", json=event(1, 9, "trigger", destination="nope"))
    assert unknown.status_code == 422
    assert problems(unknown) == [
        "destination: unknown destination 'nope' (configured: prod, staging)"]

    not_json = client.post("/v1/events", content=b'{"action": ',
                           headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422
    assert problems(not_json)[0].startswith("body: not valid JSON")
    nested = client.post("/v1/events", content=b"[" * 100_000)
    assert nested.status_code == 422
    assert problems(nested) == ["body: JSON nested too deeply"]
    assert problems(client.post("/v1/events", json=[1]))[0].startswith("event: must be")
    deep = '{"a":' * 300 + "1" + "}" * 300  # valid JSON, but no event could be stored
    stored = client.post("/v1/events", content=json.dumps(event(1, 9, "resolve"))[:-1]
                         + f', "details": {deep}}}')
    assert stored.status_code == 422
    assert problems(stored)[0].startswith("details: nests deeper than 32 levels")

    too_many = client.post("/v1/events/batch",
                           json={"events": [event(1, n, "trigger") for n in range(501)]})
    assert too_many.status_code == 422
    assert problems(too_many) == ["events: at most 500 per batch (got 501)"]
    assert problems(client.post("/v1/events/batch", json=[event(1, 1, "trigger")])) == [
        'events: required, a list of events ({"events": [...]})']
    assert redis_conn.exists(f"{prefix}schedule") == 0


def test_bodies_over_1_mb_are_refused_with_413(client: httpx.Client) -> None:
    big = json.dumps(event(1, 1, "trigger", details={"x": "a" * (1024 * 1024)}))
    response = client.post("/v1/events", content=big,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert problems(response) == ["body: at most 1048576 bytes"]

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(20):
            yield b" " * 100_000

    streamed = client.post("/v1/events", content=chunks(),
                           headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_a_body_that_does_not_arrive_in_time_gets_408(
    settings, destinations, token: str
) -> None:
    import socket

    from api.server import ApiService

    with ApiService(settings.model_copy(update={"api_body_read_seconds": 0.5}),
                    destinations) as api:
        host, port = api.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as slow:
            slow.sendall(b"POST /v1/events HTTP/1.1\r\nHost: api\r\n"
                         b"Authorization: Bearer " + token.encode() + b"\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            answer = b""
            while b"}" not in answer:  # the problem's JSON, maybe after the headers
                chunk = slow.recv(65536)
                if not chunk:
                    break
                answer += chunk
        assert answer.decode().startswith("HTTP/1.1 408 ")
        assert "body: not received within 0.5 s" in answer.decode()
        assert httpx.get(api.url + "/healthz").status_code == 200  # and it serves on
