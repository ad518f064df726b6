"""Replay never brings back a trigger whose incident MoniTao has closed (issue 16, cases 3
and 4): not when the resolve finishes between replay's reading of the timeline and of the
mailbox, and not when the later resolve ended superseded or suppressed instead of
delivered. Driven pass by pass against real Redis and the simulator."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from config.maintenance import MaintenanceWindow
from config.settings import Settings
from producer import AlertProducer
from worker.context import FleetContext
from worker.delivery import deliver_slot
from worker.maintenance import add_window, remove_window
from worker.replay import Replayer


def send(producer: AlertProducer, incident: str, action: str) -> str:
    return producer.send({"action": action, "monitor_id": "6", "incident_id": incident,
                          "summary": "[DOWN] x"})


def dead_trigger(ctx: FleetContext, producer: AlertProducer, sim: Any, incident: str) -> str:
    sim.set_faults(force_status=400)
    trigger = send(producer, incident, "trigger")
    deliver_slot(ctx, "prod", f"monitao-monitor-6-incident-{incident}")
    sim.set_faults(force_status=None)
    assert ctx.redis.hget(ctx.keys.event(trigger), "state") == "dead_lettered"
    return trigger


def test_a_resolve_finishing_while_replay_plans_supersedes_the_trigger(
    ctx: FleetContext, settings: Settings, destinations: Any, sim: Any, redis_conn: Any,
) -> None:
    producer = AlertProducer(settings, destinations=destinations, redis=redis_conn)
    incident = f"race-{uuid.uuid4().hex[:6]}"
    dedup_key = f"monitao-monitor-6-incident-{incident}"
    trigger = dead_trigger(ctx, producer, sim, incident)
    resolve = send(producer, incident, "resolve")

    class ResolveFinishesMeanwhile(redis.Redis):
        """The resolve's attempt finishes right after replay read the timeline, before it
        reads the mailbox: the race as it happens between two workers."""
        finished = False

        def lrange(self, name: Any, start: int, end: int) -> Any:
            if not self.finished:
                ResolveFinishesMeanwhile.finished = True
                deliver_slot(ctx, "prod", dedup_key)
            return super().lrange(name, start, end)

    client = ResolveFinishesMeanwhile(connection_pool=redis_conn.connection_pool)
    [decision] = Replayer(client, settings, operator="test").replay([trigger])

    assert redis_conn.hget(ctx.keys.event(resolve), "state") == "delivered"
    assert (decision.outcome, decision.reason) == ("superseded", "superseded")
    deliver_slot(ctx, "prod", dedup_key)
    assert [e["event_action"] for e in sim.received() if e["dedup_key"] == dedup_key] == [
        "resolve"]  # the trigger did not go after it
    assert redis_conn.hget(ctx.keys.event(trigger), "state") == "superseded"


def test_a_later_resolve_that_was_suppressed_closes_the_incident_for_replay(
    ctx: FleetContext, settings: Settings, destinations: Any, sim: Any, redis_conn: Any,
) -> None:
    producer = AlertProducer(settings, destinations=destinations, redis=redis_conn)
    incident = f"quiet-{uuid.uuid4().hex[:6]}"
    dedup_key = f"monitao-monitor-6-incident-{incident}"
    trigger = dead_trigger(ctx, producer, sim, incident)
    now = datetime.now(UTC)
    add_window(redis_conn, ctx.keys, MaintenanceWindow(
        id=f"w-{incident}", destination="prod", start=now - timedelta(minutes=1),
        end=now + timedelta(hours=1), mode="suppress", origin="runtime"))
    resolve = send(producer, incident, "resolve")
    deliver_slot(ctx, "prod", dedup_key)
    assert redis_conn.hget(ctx.keys.event(resolve), "state") == "suppressed"
    remove_window(redis_conn, ctx.keys, f"w-{incident}")

    [decision] = Replayer(redis_conn, settings, operator="test").replay([trigger])

    assert (decision.outcome, decision.reason) == ("superseded", "superseded")
    assert "ended suppressed, closing the incident" in decision.detail
    deliver_slot(ctx, "prod", dedup_key)
    assert [e for e in sim.received() if e["dedup_key"] == dedup_key] == []
    [forced] = Replayer(redis_conn, settings, operator="test", force=True,
                        dry_run=True).replay([trigger])
    assert forced.outcome == "skipped"  # superseded now: nothing left to force back


def test_a_later_resolve_superseded_by_coalescing_closes_the_incident_for_replay(
    settings: Settings, coalescing_destinations: Any, sim: Any, redis_conn: Any,
) -> None:
    ctx = FleetContext(settings, coalescing_destinations)
    producer = AlertProducer(settings, destinations=coalescing_destinations, redis=redis_conn)
    incident = f"flap-{uuid.uuid4().hex[:6]}"
    dedup_key = f"monitao-monitor-6-incident-{incident}"
    try:
        old = dead_trigger(ctx, producer, sim, incident)
        # a flap PagerDuty never saw: trigger and resolve both end superseded
        flap = [send(producer, incident, "trigger"), send(producer, incident, "resolve")]
        deliver_slot(ctx, "prod", dedup_key)
        assert [redis_conn.hget(ctx.keys.event(i), "state") for i in flap] == [
            "superseded", "superseded"]

        [decision] = Replayer(redis_conn, settings, operator="test").replay([old])

        assert decision.outcome == "superseded"
        assert [e for e in sim.received() if e["dedup_key"] == dedup_key] == []
    finally:
        ctx.close()
