"""The simulator's webhooks v3: signed, on each state change, retried on 5xx, in order."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from simulator import Simulator
from tests.conftest import random_routing_key, wait_until

SECRET = "sim-webhook-secret"
DEDUP = "monitao-monitor-1-incident-2"


class Collector(ThreadingHTTPServer):
    """A receiver that keeps what it got and answers `fail_first` 500s first."""

    def __init__(self, fail_first: int = 0) -> None:
        self.got: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with server.lock:
                    failing = server.fail_first > 0
                    server.fail_first -= 1
                    if not failing:
                        server.got.append({"raw": raw, "headers": {
                            k.lower(): v for k, v in self.headers.items()}})
                self.send_response(500 if failing else 202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector(fail_first=1)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def trigger(sim: Simulator) -> None:
    answer = httpx.post(sim.events_url, json={
        "routing_key": random_routing_key(), "event_action": "trigger", "dedup_key": DEDUP,
        "payload": {"summary": "down", "source": "t", "severity": "critical"}})
    assert answer.status_code == 202


def test_responder_changes_are_sent_signed_in_order(collector: Collector) -> None:
    with Simulator(webhook_url=collector.url, webhook_secret=SECRET) as sim:
        trigger(sim)
        ack = httpx.post(f"{sim.url}/_sim/incidents/{DEDUP}/acknowledge", json={"agent": "Jo"})
        assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
        # acknowledging again changes nothing and sends nothing
        assert httpx.post(f"{sim.url}/_sim/incidents/{DEDUP}/acknowledge").status_code == 200
        assert httpx.post(f"{sim.url}/_sim/incidents/{DEDUP}/resolve").status_code == 200
        wait_until(lambda: len(collector.got) == 3, 10, message="three webhooks")
        deliveries = sim.webhook_deliveries()
    bodies = [json.loads(g["raw"])["event"] for g in collector.got]
    assert [b["event_type"] for b in bodies] == [
        "incident.triggered", "incident.acknowledged", "incident.resolved"]
    assert bodies[1]["agent"]["summary"] == "Jo"
    assert bodies[2]["agent"]["summary"] == "Simulated Responder"
    assert {b["data"]["incident_key"] for b in bodies} == {DEDUP}
    assert bodies[1]["data"]["status"] == "acknowledged"
    for got in collector.got:
        expected = hmac.new(SECRET.encode(), got["raw"], hashlib.sha256).hexdigest()
        assert got["headers"]["x-pagerduty-signature"] == f"v1={expected}"
        assert got["headers"]["x-webhook-id"]
    # the first delivery met a 500 and was retried with the same webhook id
    assert deliveries[0]["attempts"] == 2 and deliveries[0]["status"] == 202


def test_responder_endpoint_errors() -> None:
    with Simulator() as sim:
        assert httpx.post(f"{sim.url}/_sim/incidents/nope/acknowledge").status_code == 404
        trigger(sim)
        assert httpx.post(f"{sim.url}/_sim/incidents/{DEDUP}/resolve",
                          content=b"{bad").status_code == 400
        assert sim.webhook_deliveries() == []  # no receiver configured: nothing sent
        assert sim.respond(DEDUP, "resolve")["status"] == "resolved"
