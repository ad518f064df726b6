"""Destinations in a real browser: Add destination with its labelled fields (the routing
key never shown again), Send test until `delivered` shows, Edit, and Remove with the
pending count."""

from __future__ import annotations

import hashlib

import redis
from playwright.sync_api import expect

from config.keyspace import Keyspace
from tests.conftest import random_routing_key, wait_until
from tests.console.conftest import Console


def add_destination(console: Console, name: str, routing_key: str, *,
                    browser_checks: bool = True, **extra: str) -> None:
    """Fill and send the Add destination form (`browser_checks` off: the server's are the
    only ones)."""
    page = console.page
    console.open("/destinations")
    page.get_by_role("link", name="Add destination").click()
    if not browser_checks:
        page.locator("form.stacked").evaluate("form => { form.noValidate = true; }")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Routing key").fill(routing_key)
    page.get_by_label("Region").select_option("eu")
    page.get_by_label("Account").fill(extra.get("account", "acme"))
    page.get_by_label("Events URL").fill(console.fleet.sim.events_url)
    page.get_by_label("Severity for critical").select_option("error")
    page.get_by_role("button", name="Add destination").click()


def test_add_a_destination_and_send_test_until_delivered(
        signed_in: Console, redis_conn: redis.Redis, prefix: str) -> None:
    page, sim = signed_in.page, signed_in.fleet.sim
    key = random_routing_key()

    add_destination(signed_in, "bad name", key, browser_checks=False)  # refused by the server
    expect(page.get_by_role("alert")).to_contain_text("name: must be 1-64 letters")
    expect(page.get_by_label("Routing key")).to_have_value("")  # never echoed back
    assert key not in page.content()

    add_destination(signed_in, "acme-web", key)
    expect(page.get_by_role("status")).to_have_text("added destination acme-web")
    row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="acme-web"))
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:8]
    expect(row).to_contain_text("32 characters")
    expect(row).to_contain_text(fingerprint)
    expect(row).to_contain_text("acme")
    assert key not in page.content()  # described, never shown
    stored = redis_conn.hgetall(Keyspace(prefix).destination("acme-web"))
    assert key not in str(stored) and stored["region"] == "eu"

    row.get_by_role("button", name="Send test to acme-web").click()
    steps = page.get_by_role("log", name="Steps of the send test")
    expect(steps).to_contain_text("trigger: delivered")
    expect(steps).to_contain_text("resolve: delivered")
    expect(page.get_by_role("status")).to_have_text("Both events were delivered: acme-web works.")
    sent = sim.received()
    assert [e["event_action"] for e in sent] == ["trigger", "resolve"]
    assert sent[0]["routing_key_hash"] == hashlib.sha256(key.encode()).hexdigest()[:12]
    assert sent[0]["body"]["payload"]["severity"] == "info"  # the gentlest level


def test_edit_and_remove_with_the_pending_count(signed_in: Console) -> None:
    page, fleet = signed_in.page, signed_in.fleet
    add_destination(signed_in, "acme-api", random_routing_key())
    expect(page.get_by_role("status")).to_have_text("added destination acme-api")

    page.get_by_role("link", name="Edit acme-api").click()
    expect(page.get_by_label("Routing key")).to_have_value("")
    expect(page.get_by_label("Account")).to_have_value("acme")
    page.get_by_label("Rate limit per minute").fill("42")
    page.get_by_label("Account").fill("")  # cleared
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("changed destination acme-api")
    row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="acme-api"))
    expect(row).to_contain_text("42 / min")

    # two events that cannot be delivered yet (PagerDuty answers 500: retried, pending)
    fleet.sim.set_faults(force_status=500)
    ids = [fleet.producer.send({"destination": "acme-api", "action": "trigger",
                                "monitor_id": "9", "incident_id": str(n), "summary": "down"})
           for n in (1, 2)]
    wait_until(lambda: len(fleet.sim.requests()) >= 2, 20, message="the first attempts")
    row.get_by_role("link", name="Remove acme-api").click()
    expect(page.get_by_role("alert")).to_contain_text("2 pending event(s)")
    page.get_by_role("button", name="Remove acme-api and dead-letter 2 pending event(s)").click()
    expect(page.get_by_role("status")).to_have_text(
        "removed destination acme-api; 2 pending event(s) dead-lettered as destination_removed")
    expect(page.get_by_role("rowheader", name="acme-api")).to_have_count(0)
    assert set(fleet.wait_final(ids).values()) == {"dead_lettered"}
