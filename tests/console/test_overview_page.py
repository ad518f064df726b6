"""The overview in a real browser: the fleet's figures, the charts of the last hour drawn
from the workers' per-minute counts, and a refresh that swaps the live part in without a
page load."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from config import defaults
from tests.console.conftest import Console


def test_the_overview_shows_the_fleet_and_refreshes_itself(
        signed_in: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "CONSOLE_REFRESH_SECONDS", 1)  # a quick test, same swap
    page, fleet = signed_in.page, signed_in.fleet
    fleet.sim.set_faults(force_status=400)
    dead = fleet.producer.send({"action": "trigger", "monitor_id": "1", "incident_id": "1",
                                "summary": "[DOWN] a"})
    assert fleet.wait_final([dead]) == {dead: "dead_lettered"}
    fleet.sim.set_faults(force_status=None)
    delivered = fleet.producer.send({"action": "trigger", "monitor_id": "2", "incident_id": "2",
                                     "summary": "[DOWN] b"})
    assert fleet.wait_final([delivered]) == {delivered: "delivered"}

    signed_in.open("/")
    page.evaluate("window.notReloaded = true")
    tiles = page.locator(".tiles")
    expect(tiles).to_contain_text("workers online")
    expect(tiles.locator("li").filter(has_text="dead letters")).to_contain_text("rejected 1")
    expect(page.get_by_role("table").filter(has_text="Budget use")).to_contain_text("prod")
    outcomes = page.get_by_role("figure", name="Deliveries per minute by outcome, last hour")
    latency = page.get_by_role("figure", name="Enqueue to delivered latency per minute")
    # the workers flush their counts about once a second: the refresh brings them in
    expect(outcomes.locator(".legend")).to_contain_text("delivered: 1")
    expect(outcomes.locator(".legend")).to_contain_text("dead-lettered: 1")
    expect(outcomes.locator("svg polyline").first).to_be_attached()
    expect(latency.locator(".legend")).not_to_contain_text("p50: -")
    first = page.get_by_test_id("updated").inner_text()
    expect(page.get_by_test_id("updated")).not_to_have_text(first, timeout=10_000)
    assert page.evaluate("window.notReloaded") is True  # swapped in, not reloaded
