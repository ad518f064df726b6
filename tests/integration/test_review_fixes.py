"""Races a review found: a pass that lost its lease, a reply lost after PagerDuty took the
event, a resolve of an alert PagerDuty already holds during maintenance."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from config.keyspace import slot_of
from config.maintenance import MaintenanceWindow
from producer import AlertProducer
from tests.conftest import Fleet
from worker.admission import Admission
from worker.context import FleetContext
from worker.delivery import deliver_slot
from worker.maintenance import add_window


def test_a_pass_that_lost_its_lease_may_not_send(ctx: FleetContext, redis_conn) -> None:
    keys, slot = ctx.keys, slot_of("prod", "lost")
    redis_conn.set(keys.lease(slot), "someone-else", px=10_000)
    redis_conn.zadd(keys.schedule, {slot: 0})
    raw = ctx.scripts.gate(
        keys=[keys.lease(slot), keys.schedule, keys.timeline("x"), keys.circuit("e"),
              keys.circuit_waiting("e"), keys.circuit_probe("e"), keys.cooldown("prod"),
              keys.rate_window("prod"), keys.rate_waiting("prod"), keys.event("e1")],
        args=["my-token", slot, "e1", 0, 100, 60_000, 30_000, 10, 1000, 1000,
              json.dumps(["event_id", "e1"]), 5_000],
    )
    assert Admission.from_script(raw) == Admission(False, reason="lease_lost")
    # nothing changed: no token taken, no schedule or lease moved, the event not marked
    assert redis_conn.zcard(keys.rate_window("prod")) == 0
    assert redis_conn.get(keys.lease(slot)) == "someone-else"
    assert redis_conn.zscore(keys.schedule, slot) == 0
    assert not redis_conn.exists(keys.event("e1"))


def test_a_trigger_whose_reply_was_lost_is_never_coalesced_away(
    settings, coalescing_destinations, sim, redis_conn
) -> None:
    # A trigger went out (PagerDuty answered 202) but the worker died before recording it:
    # it is still at the head, with the `sent` mark the gate set and no attempt recorded.
    ctx = FleetContext(settings, coalescing_destinations)
    from worker.app import create_app

    producer = AlertProducer(settings, destinations=coalescing_destinations, redis=redis_conn,
                             celery_app=create_app(settings, coalescing_destinations))
    incident = f"lost-{uuid.uuid4().hex[:6]}"
    trigger, resolve = producer.send_many([
        {"action": "trigger", "monitor_id": "3", "incident_id": incident, "summary": "down"},
        {"action": "resolve", "monitor_id": "3", "incident_id": incident}])
    redis_conn.hset(ctx.keys.event(trigger), "sent", 1)
    try:
        deliver_slot(ctx, "prod", f"monitao-monitor-3-incident-{incident}")
        states = [redis_conn.hget(ctx.keys.event(i), "state") for i in (trigger, resolve)]
        assert states == ["delivered", "delivered"]
        assert [e["event_action"] for e in sim.received()] == ["trigger", "resolve"]
    finally:
        ctx.close()


def test_the_resolve_of_an_open_alert_goes_through_a_suppress_window(fleet: Fleet) -> None:
    base = {"monitor_id": "6", "incident_id": "open"}
    [first] = fleet.producer.send_many([{**base, "action": "trigger", "summary": "down"}])
    assert fleet.wait_final([first]) == {first: "delivered"}
    now = datetime.now(UTC)
    add_window(fleet.redis, fleet.keys, MaintenanceWindow(
        id="late", destination="prod", start=now - timedelta(minutes=1),
        end=now + timedelta(minutes=10), mode="suppress"))
    again, resolve = fleet.producer.send_many([
        {**base, "action": "trigger", "summary": "still down"}, {**base, "action": "resolve"}])
    assert fleet.wait_final([again, resolve]) == {again: "suppressed", resolve: "delivered"}
    [incident] = fleet.sim.incidents()
    assert incident["status"] == "resolved"
