"""An incident's timeline in a real browser: every stage a delivery goes through, from
real workers, the simulator and the webhook receiver, drawn one row per stage with the
summary figures above."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from config.destinations import Destination, parse_destinations
from config.keyspace import Keyspace
from simulator import Simulator
from tests.conftest import wait_until
from tests.console.conftest import Console
from webhooks import WebhookService
from worker import timeline

SECRET = "whsec-console-test-5c1d9e"
DEDUP = "monitao-monitor-31-incident-777"


@pytest.fixture
def destinations(sim: Simulator, routing_key: str) -> dict[str, Destination]:
    """`prod`, one request per rate window: a retry right after a failure waits for it."""
    return parse_destinations({"destinations": {"prod": {
        "routing_key": routing_key, "events_url": sim.events_url,
        "rate_limit_per_minute": 1}}}, environ={})


@pytest.fixture
def fleet_options(secret_keys: str) -> dict[str, Any]:
    return {"secret_keys": secret_keys, "rate_window_seconds": 1.5,
            "webhook_secrets": SECRET}


@pytest.fixture
def receiver(console: Console) -> Iterator[WebhookService]:
    """PagerDuty's webhooks (the simulator's responders) recorded in the timelines."""
    with WebhookService(console.fleet.settings, block_seconds=0.2) as service:
        console.fleet.sim.set_webhook(service.url, SECRET)
        yield service
        console.fleet.sim.set_webhook(None, None)


def stages(console: Console) -> list[str]:
    keys = Keyspace(console.fleet.settings.key_prefix)
    return [e["stage"] for e in timeline.read(console.fleet.redis, keys, "777")]


def test_an_incident_shows_every_stage(console: Console, receiver: WebhookService) -> None:
    fleet, sim = console.fleet, console.fleet.sim
    event = {"monitor_id": "31", "incident_id": "777"}
    sim.set_faults(fail_next=1, error_status=500)  # one retry, then the budget makes it wait
    trigger = fleet.producer.send({**event, "action": "trigger", "summary": "[DOWN] shop"})
    assert fleet.wait_final([trigger]) == {trigger: "delivered"}
    sim.respond(DEDUP, "acknowledge", "Jane Responder")
    wait_until(lambda: "pagerduty_acknowledged" in stages(console), 20,
               message="the acknowledgement's webhook")
    sim.set_faults(force_status=400)
    update = fleet.producer.send({**event, "action": "trigger", "summary": "[DOWN] shop 2"})
    assert fleet.wait_final([update]) == {update: "dead_lettered"}
    sim.set_faults(force_status=None)
    resolve = fleet.producer.send({**event, "action": "resolve"})
    assert fleet.wait_final([resolve]) == {resolve: "delivered"}
    wait_until(lambda: "pagerduty_resolved" in stages(console), 20,
               message="the resolution's webhook")

    console.sign_in()
    page = console.page
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Incidents").click()
    page.get_by_label("Incident ID").fill("777")
    page.get_by_role("button", name="Show timeline").click()
    summary = page.get_by_role("region", name="Summary")
    expect(summary).to_contain_text("3: 1 dead lettered, 2 delivered")
    expect(summary).to_contain_text("Retries scheduled")
    drawn = page.get_by_role("list", name="Timeline of incident 777").locator(":scope > li")
    rows = drawn.all_inner_texts()
    assert len(rows) == len(stages(console))  # one row per stage, nothing left out

    def row(stage: str, *texts: str) -> None:
        found = [r for r in rows if f"\n{stage} " in r.lower() and all(t in r for t in texts)]
        assert found, f"no {stage!r} row with {texts}: {rows}"

    row("enqueued", "trigger")
    row("attempt", "try 1: HTTP 500")
    row("retry scheduled", "backoff, until")
    row("rate limited", "rate limit, until")
    row("attempt", "try 2: HTTP 202")
    row("delivered", "accepted by PagerDuty", DEDUP)
    row("pagerduty acknowledged", "by Jane Responder")
    row("attempt", "HTTP 400")
    row("dead lettered", "rejected: HTTP 400", "PagerDuty's errors",
        "status 400 forced by the simulator")
    row("delivered", "resolve")
    row("pagerduty resolved")

    page.get_by_label("Incident ID").fill("no-such-incident")
    page.get_by_role("button", name="Show timeline").click()
    expect(page.get_by_role("alert")).to_contain_text("no timeline for incident 'no-such-incident'")
