"""The whole loop over real HTTP: MoniTao trigger -> fleet -> PagerDuty (simulator) ->
a responder acknowledges -> signed webhook -> receiver -> the incident's timeline."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from config.settings import load_settings
from simulator import Simulator
from tests.conftest import FAST, Fleet, wait_until
from tests.webhooks.conftest import SECRET_A, SECRET_B
from webhooks import WebhookService
from worker import timeline
from worker.callback import sign


def test_an_acknowledgement_in_pagerduty_reaches_the_incidents_timeline(
        fleet: Fleet, sim: Simulator, receiver: WebhookService,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sim.set_webhook(receiver.url, SECRET_A)
    event_id = fleet.producer.send({
        "action": "trigger", "monitor_id": 77, "incident_id": "loop-1",
        "summary": "[DOWN] example.com - HTTP 503", "level": "critical"})
    assert fleet.wait_final([event_id]) == {event_id: "delivered"}
    dedup = "monitao-monitor-77-incident-loop-1"

    answer = httpx.post(f"{sim.url}/_sim/incidents/{dedup}/acknowledge",
                        json={"agent": "Jane Responder"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "acknowledged"

    def acknowledged() -> list[dict]:
        return [e for e in timeline.read(fleet.redis, fleet.keys, "loop-1")
                if e["stage"] == "pagerduty_acknowledged"]

    [entry] = wait_until(acknowledged, 20, message="pagerduty_acknowledged in the timeline")
    assert entry["agent"] == "Jane Responder"
    assert (entry["dedup_key"], entry["destination"], entry["pd_status"]) == (
        dedup, "prod", "acknowledged")
    assert entry["pd_incident"] == sim.incidents()[0]["id"]
    stages = [e["stage"] for e in timeline.read(fleet.redis, fleet.keys, "loop-1")]
    assert stages.index("delivered") < stages.index("pagerduty_acknowledged")
    # every webhook the simulator sent was accepted (the trigger's too, ignored by type)
    assert {d["status"] for d in sim.webhook_deliveries()} == {202}

    dump = [caplog.text]
    for key in fleet.redis.scan_iter(match=f"{fleet.settings.key_prefix}*"):
        kind = fleet.redis.type(key)
        dump.append(key)
        if kind == "string":
            dump.append(fleet.redis.get(key) or "")
        elif kind == "stream":
            dump.append(repr(fleet.redis.xrange(key)))
        elif kind == "hash":
            dump.append(repr(fleet.redis.hgetall(key)))
        elif kind == "list":
            dump.append(repr(fleet.redis.lrange(key, 0, -1)))
    text = "\n".join(dump)
    assert SECRET_A not in text and SECRET_B not in text


CALLBACK_SECRET = "cbsec-test-5d2e8f"


class MoniTaoEndpoint:
    """MoniTao's callback endpoint: records each request, fails the first `fail_first`."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first, self.requests = fail_first, []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.requests.append((dict(self.headers), body))
                failing = len(endpoint.requests) <= endpoint.fail_first
                self.send_response(503 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pagerduty-changes"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[dict]:
        """The changes MoniTao accepted (answered 2xx), in arrival order."""
        return [json.loads(body) for i, (_, body) in enumerate(self.requests)
                if i >= self.fail_first]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_state_changes_reach_monitao_signed_and_in_order_through_a_failing_endpoint(
        make_fleet, sim: Simulator, redis_url: str, prefix: str) -> None:
    monitao = MoniTaoEndpoint(fail_first=2)
    callback = {"callback_url": monitao.url, "callback_secret": CALLBACK_SECRET}
    settings = load_settings(redis_url=redis_url, key_prefix=prefix, webhook_secrets=SECRET_A,
                             **callback, **FAST)
    try:
        with make_fleet(**callback) as fleet, WebhookService(
                settings, claim_idle_seconds=60, block_seconds=0.2) as receiver:
            sim.set_webhook(receiver.url, SECRET_A)
            event_id = fleet.producer.send({"action": "trigger", "monitor_id": 5,
                                            "incident_id": "cb-1", "summary": "[DOWN]"})
            assert fleet.wait_final([event_id]) == {event_id: "delivered"}
            dedup = "monitao-monitor-5-incident-cb-1"
            for step in ("acknowledge", "resolve"):
                answer = httpx.post(f"{sim.url}/_sim/incidents/{dedup}/{step}",
                                    json={"agent": "Jane Responder"}, timeout=10)
                assert answer.status_code == 200

            changes = wait_until(lambda: len(monitao.accepted()) >= 2 and monitao.accepted(),
                                 30, message="two state changes accepted by MoniTao")
            assert [c["event_type"] for c in changes] == ["incident.acknowledged",
                                                          "incident.resolved"]
            assert {c["incident_id"] for c in changes} == {"cb-1"}
            assert changes[0]["agent"] == "Jane Responder"
            for headers, body in monitao.requests:
                assert headers["X-MoniTao-Signature"] == sign(CALLBACK_SECRET, body)
            # the endpoint's two failures were retried, in order, by the same machinery
            def attempts() -> list[dict]:
                return [e for e in timeline.read(fleet.redis, fleet.keys, "cb-1")
                        if e["destination"] == "@callback" and e["stage"] == "attempt"]

            # the endpoint records a request before answering; the attempt entry follows
            entries = wait_until(lambda: len(attempts()) >= 4 and attempts(), 10,
                                 message="four callback attempts in the timeline")
            assert [e.get("http_status") for e in entries] == [503, 503, 204, 204]
            assert len(monitao.requests) == 4
    finally:
        monitao.close()


def test_a_run_time_destination_gets_pagerdutys_side_too(
        make_fleet, sim: Simulator, receiver: WebhookService, routing_key: str) -> None:
    # issue 11, item 6: the webhook receiver works the same for a run-time destination
    from config.registry import Registry
    from config.secrets import generate_key, parse_key_ring

    ring = generate_key()
    with make_fleet(secret_keys=ring) as fleet:
        Registry(fleet.redis, fleet.keys, key_ring=parse_key_ring(ring)).add(
            "acme", {"events_url": sim.events_url, "account": "cust-7"}, routing_key)
        sim.set_webhook(receiver.url, SECRET_A)
        event_id = fleet.producer.send({
            "destination": "acme", "action": "trigger", "monitor_id": 78,
            "incident_id": "loop-rt", "summary": "[DOWN] example.org"})
        assert fleet.wait_final([event_id]) == {event_id: "delivered"}
        dedup = "monitao-monitor-78-incident-loop-rt"
        assert httpx.post(f"{sim.url}/_sim/incidents/{dedup}/acknowledge",
                          json={"agent": "Ana"}, timeout=10).status_code == 200

        def acknowledged() -> list[dict]:
            return [e for e in timeline.read(fleet.redis, fleet.keys, "loop-rt")
                    if e["stage"] == "pagerduty_acknowledged"]

        [entry] = wait_until(acknowledged, 20, message="pagerduty_acknowledged in the timeline")
        assert (entry["destination"], entry["agent"]) == ("acme", "Ana")
