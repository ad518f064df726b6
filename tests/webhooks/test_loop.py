"""The whole loop over real HTTP: MoniTao trigger -> fleet -> PagerDuty (simulator) ->
a responder acknowledges -> signed webhook -> receiver -> the incident's timeline."""

from __future__ import annotations

import logging

import httpx
import pytest

from simulator import Simulator
from tests.conftest import Fleet, wait_until
from tests.webhooks.conftest import SECRET_A, SECRET_B
from webhooks import WebhookService
from worker import timeline


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
