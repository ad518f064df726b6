"""PagerDuty ends in MoniTao's last state even when an answer is lost: a request PagerDuty
processes late (the simulator holds it, processes it, and never answers) cannot re-open an
incident its resolve closed. Real worker threads, Redis and the simulator over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager

from tests.conftest import Fleet, wait_until
from worker import timeline


def incident_events(fleet: Fleet, incident: str) -> list[str]:
    return fleet.producer.send_many([
        {"action": "trigger", "monitor_id": "7", "incident_id": incident, "summary": "[DOWN] x"},
        {"action": "resolve", "monitor_id": "7", "incident_id": incident},
    ])


def arrivals(fleet: Fleet, incident: str) -> list[str]:
    """The actions the simulator processed for the incident, in the order it processed them."""
    dedup_key = f"monitao-monitor-7-incident-{incident}"
    return [e["event_action"] for e in fleet.sim.received() if e["dedup_key"] == dedup_key]


def test_a_trigger_processed_late_within_the_window_is_appended_not_reopened(
    make_fleet: Callable[..., AbstractContextManager[Fleet]],
) -> None:
    incident = f"late-{uuid.uuid4().hex[:6]}"
    with make_fleet(http_read_timeout=0.5, uncertain_window_seconds=3.0) as fleet:
        # the first trigger is held 1.5 s and processed without an answer: the worker's read
        # times out after 0.5 s, it sends the trigger again (202), and its resolve must not
        # go before the held trigger can land
        fleet.sim.set_faults(stall_next=1, stall_ms=1500)
        trigger, resolve = incident_events(fleet, incident)
        states = fleet.wait_final([trigger, resolve], timeout=30)
        assert states == {trigger: "delivered", resolve: "delivered"}
        wait_until(lambda: len(arrivals(fleet, incident)) >= 4, 15, message="the confirmation")

        order = arrivals(fleet, incident)
        first_resolve = order.index("resolve")
        assert "trigger" not in order[first_resolve:], order
        assert [i["status"] for i in fleet.sim.incidents()] == ["resolved"]
        assert order == ["trigger", "trigger", "resolve", "resolve"]  # the last one confirms
        waits = [e for e in timeline.read(fleet.redis, fleet.keys, incident)
                 if e.get("reason") == "uncertain_delivery"]
        assert [w["event_id"] for w in waits] == [resolve]
        assert waits[0]["delay_ms"] >= 2000  # to the held trigger's window, not a backoff


def test_a_trigger_processed_after_the_window_is_closed_again_by_the_confirmation(
    make_fleet: Callable[..., AbstractContextManager[Fleet]],
) -> None:
    incident = f"later-{uuid.uuid4().hex[:6]}"
    with make_fleet(http_read_timeout=0.5, uncertain_window_seconds=2.5) as fleet:
        # held 4 s: longer than the 2.5 s window the resolve waits, so the late trigger
        # opens a new incident after the resolve; the resolve sent once more closes it
        fleet.sim.set_faults(stall_next=1, stall_ms=4000)
        trigger, resolve = incident_events(fleet, incident)
        assert fleet.wait_final([trigger, resolve], timeout=30) == {
            trigger: "delivered", resolve: "delivered"}
        confirm = f"{resolve}:confirm"
        assert fleet.wait_final([confirm], timeout=30) == {confirm: "delivered"}

        order = arrivals(fleet, incident)
        assert order == ["trigger", "resolve", "trigger", "resolve"], order
        assert [i["status"] for i in fleet.sim.incidents()] == ["resolved", "resolved"]
        entries = list(timeline.read(fleet.redis, fleet.keys, incident))
        [queued] = [e for e in entries if e["event_id"] == confirm and e["stage"] == "enqueued"]
        assert queued["confirm_of"] == resolve


def test_an_incident_without_a_lost_answer_costs_nothing_more(
    make_fleet: Callable[..., AbstractContextManager[Fleet]],
) -> None:
    incident = f"plain-{uuid.uuid4().hex[:6]}"
    with make_fleet(uncertain_window_seconds=30.0) as fleet:
        trigger, resolve = incident_events(fleet, incident)
        fleet.wait_final([trigger, resolve], timeout=20)
        assert arrivals(fleet, incident) == ["trigger", "resolve"]
        assert not fleet.redis.exists(fleet.keys.event(f"{resolve}:confirm"))
        assert not any(e.get("reason") == "uncertain_delivery"
                       for e in timeline.read(fleet.redis, fleet.keys, incident))
