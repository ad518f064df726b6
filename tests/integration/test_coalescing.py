"""Alert-storm coalescing (a destination's `coalesce = true`) with real worker threads."""

from __future__ import annotations

import pytest

from config.destinations import Destination
from tests.conftest import Fleet
from worker import timeline


@pytest.fixture
def destinations(coalescing_destinations: dict[str, Destination]) -> dict[str, Destination]:
    return coalescing_destinations


def trigger(incident: str, seq: int) -> dict:
    return {"action": "trigger", "monitor_id": "4", "incident_id": incident,
            "summary": f"[DOWN] {seq}", "details": {"seq": seq}}


def resolve(incident: str) -> dict:
    return {"action": "resolve", "monitor_id": "4", "incident_id": incident}


def superseded(fleet: Fleet, incident: str) -> list[str]:
    return [e["reason"] for e in timeline.read(fleet.redis, fleet.keys, incident)
            if e["stage"] == "superseded"]


def test_a_flap_pagerduty_never_saw_is_superseded_whole(fleet: Fleet) -> None:
    ids = fleet.producer.send_many([
        trigger("f", 1), {"action": "acknowledge", "monitor_id": "4", "incident_id": "f"},
        resolve("f")])
    assert set(fleet.wait_final(ids).values()) == {"superseded"}
    assert fleet.sim.received() == []
    assert superseded(fleet, "f") == ["flap", "flap", "flap"]


def test_of_several_unsent_triggers_only_the_newest_is_sent(fleet: Fleet) -> None:
    ids = fleet.producer.send_many([trigger("s", 1), trigger("s", 2), trigger("s", 3)])
    assert list(fleet.wait_final(ids).values()) == ["superseded", "superseded", "delivered"]
    [sent] = fleet.sim.received()
    assert sent["body"]["payload"]["custom_details"]["seq"] == 3
    assert superseded(fleet, "s") == ["newer_trigger", "newer_trigger"]


def test_a_resolve_is_never_coalesced_away_while_pagerduty_has_the_alert(fleet: Fleet) -> None:
    [first] = fleet.producer.send_many([trigger("o", 1)])
    fleet.wait_final([first])
    ids = fleet.producer.send_many([trigger("o", 2), resolve("o")])
    assert set(fleet.wait_final(ids).values()) == {"delivered"}
    assert [e["event_action"] for e in fleet.sim.received()] == ["trigger", "trigger", "resolve"]
    [incident] = fleet.sim.incidents()
    assert incident["status"] == "resolved"
