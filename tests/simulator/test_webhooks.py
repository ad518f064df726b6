"""The simulator's webhooks v3: signed, on each state change, retried on 5xx, in order."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator

import httpx
import pytest

from simulator import Simulator
from tests.conftest import random_routing_key, wait_until
from tests.simulator.collector import Collector, serving

SECRET = "sim-webhook-secret"
DEDUP = "monitao-monitor-1-incident-2"


@pytest.fixture
def collector() -> Iterator[Collector]:
    with serving(fail_first=1) as server:
        yield server


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
    bodies = [body["event"] for body in collector.bodies()]
    assert [b["event_type"] for b in bodies] == [
        "incident.triggered", "incident.acknowledged", "incident.resolved"]
    assert bodies[1]["agent"]["summary"] == "Jo"
    assert bodies[2]["agent"]["summary"] == "Simulated Responder"
    assert {b["data"]["incident_key"] for b in bodies} == {DEDUP}
    assert bodies[1]["data"]["status"] == "acknowledged"
    for raw, headers in collector.got:
        expected = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        assert headers["x-pagerduty-signature"] == f"v1={expected}"
        assert headers["x-webhook-id"]
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
