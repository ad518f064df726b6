"""Dead letters in a real browser: a 400 from PagerDuty makes one; the page lists it with
its filters, Preview replay shows what would happen without changing anything, Replay
sends it and it is delivered; a row opens `dlq show`; Purge asks first."""

from __future__ import annotations

import redis
from playwright.sync_api import expect

from config.keyspace import Keyspace
from tests.console.conftest import Console
from worker import dead_letters


def dead_letter(console: Console, incident: str) -> str:
    """An event PagerDuty refused (the simulator answers 400): its id."""
    fleet = console.fleet
    fleet.sim.set_faults(force_status=400)
    event_id = fleet.producer.send({"action": "trigger", "monitor_id": "5",
                                    "incident_id": incident, "summary": "[DOWN] api"})
    assert fleet.wait_final([event_id]) == {event_id: "dead_lettered"}
    fleet.sim.set_faults(force_status=None)
    return event_id


def test_preview_then_replay_a_dead_letter_until_delivered(
        signed_in: Console, redis_conn: redis.Redis, prefix: str) -> None:
    page, fleet = signed_in.page, signed_in.fleet
    event_id = dead_letter(signed_in, "501")
    signed_in.open("/dead-letters")
    page.get_by_label("Destination").fill("nowhere")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No dead letters match these filters.")).to_be_visible()
    page.get_by_label("Destination").fill("prod")
    page.get_by_label("Reason").fill("rejected")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("1 dead letter(s) match: rejected 1")).to_be_visible()

    page.get_by_role("checkbox", name=f"Select dead letter {event_id[:12]}").check()
    page.get_by_role("button", name="Preview replay").click()
    result = page.locator("#replay-result")
    expect(result).to_contain_text("Replay preview (nothing sent yet)")
    expect(result.get_by_role("row").filter(has_text=event_id[:12])).to_contain_text(
        "would queue")
    assert fleet.state(event_id) == "dead_lettered"  # a preview changes nothing
    assert "/dead-letters?destination=prod" in page.url  # swapped in: no page load

    result.get_by_role("button", name="Replay").click()
    expect(result).to_contain_text("Replayed")
    expect(result.get_by_role("row").filter(has_text=event_id[:12])).to_contain_text("queued")
    assert fleet.wait_final([event_id]) == {event_id: "delivered"}
    assert [e["event_action"] for e in fleet.sim.received()] == ["trigger"]
    signed_in.open("/dead-letters")
    expect(page.get_by_text("No dead letters.")).to_be_visible()
    keys = Keyspace(prefix)
    assert dead_letters.count(redis_conn, keys) == 0


def test_a_row_opens_the_dead_letter_and_purge_asks_first(
        signed_in: Console, redis_conn: redis.Redis, prefix: str) -> None:
    page, fleet = signed_in.page, signed_in.fleet
    first, second = dead_letter(signed_in, "601"), dead_letter(signed_in, "602")
    signed_in.open("/dead-letters")
    page.get_by_role("link", name=first[:12]).click()
    expect(page.get_by_role("heading", name=f"Dead letter {first}")).to_be_visible()
    expect(page.locator("main")).to_contain_text("status 400 forced by the simulator")
    expect(page.locator("main")).to_contain_text('"routing_key": "********"')  # masked
    assert fleet.sim.received() == []  # nothing was delivered

    signed_in.open("/dead-letters")
    page.get_by_role("checkbox", name=f"Select dead letter {second[:12]}").check()
    page.get_by_role("button", name="Purge").click()
    expect(page.get_by_role("heading", name="Purge dead letters")).to_be_visible()
    assert fleet.state(second) == "dead_lettered"  # not before it is confirmed
    page.get_by_role("button", name="Purge 1 dead letter(s)").click()
    expect(page.get_by_role("status")).to_have_text("purged 1 dead letter(s)")
    assert fleet.state(second) == "purged"
    expect(page.get_by_role("checkbox", name=f"Select dead letter {first[:12]}")).to_be_visible()
    expect(page.get_by_role("checkbox", name=f"Select dead letter {second[:12]}")).to_have_count(0)
