"""The gate run by ACQUIRE: the first event of a pass admitted in the same round trip, an
admission given back when the event cannot be sent, a slot over budget sent away, and the
separate gate wherever the event itself decides (a maintenance window). Real Redis, the
simulator over HTTP; the gate script is only counted, never replaced."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from config.destinations import Destination, parse_destinations
from config.keyspace import slot_of
from config.maintenance import MaintenanceWindow
from config.settings import Settings
from producer import AlertProducer
from worker import timeline
from worker.context import FleetContext
from worker.delivery import deliver_slot, endpoint_id
from worker.maintenance import add_window


def plain(sim: Any, routing_key: str, budget: int) -> dict[str, Destination]:
    return parse_destinations(
        {"destinations": {"prod": {"routing_key": routing_key, "events_url": sim.events_url,
                                   "rate_limit_per_minute": budget}}},
        environ={},
    )


@pytest.fixture
def start(settings: Settings, sim: Any, routing_key: str,
          redis_conn: Any) -> Iterator[Callable[[int], tuple[FleetContext, AlertProducer]]]:
    contexts: list[FleetContext] = []

    def make(budget: int) -> tuple[FleetContext, AlertProducer]:
        destinations = plain(sim, routing_key, budget)
        ctx = FleetContext(settings, destinations)
        contexts.append(ctx)
        return ctx, AlertProducer(settings, destinations=destinations, redis=redis_conn)

    yield make
    for ctx in contexts:
        ctx.close()


def count_gates(ctx: FleetContext) -> list[int]:
    """Count this thread's calls of the separate gate script (it still runs)."""
    scripts, calls = ctx.scripts, []
    gate = scripts.gate

    def counted(**kwargs: Any) -> Any:
        calls.append(1)
        return gate(**kwargs)

    scripts.gate = counted  # type: ignore[method-assign]
    return calls


def trigger(producer: AlertProducer, incident: str) -> str:
    [event_id] = producer.send_many([{"action": "trigger", "monitor_id": "7",
                                      "incident_id": incident, "summary": "[DOWN] x"}])
    return event_id


def test_the_first_event_of_a_pass_is_admitted_by_acquire(start, sim, redis_conn) -> None:
    ctx, producer = start(100)
    gates = count_gates(ctx)
    event_id = trigger(producer, "a1")

    report = deliver_slot(ctx, "prod", "monitao-monitor-7-incident-a1")

    assert (report.ended, report.finished) == ("empty", 1)
    assert gates == []  # no second round trip
    assert redis_conn.hget(ctx.keys.event(event_id), "state") == "delivered"
    assert len(sim.received()) == 1
    assert redis_conn.zcard(ctx.keys.rate_window("prod")) == 1  # counted all the same


def test_with_a_maintenance_window_the_gate_runs_on_its_own(start, sim, redis_conn) -> None:
    ctx, producer = start(100)
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    add_window(redis_conn, ctx.keys, MaintenanceWindow(
        destination="prod", start=tomorrow, end=tomorrow + timedelta(hours=1)))
    gates = count_gates(ctx)
    event_id = trigger(producer, "a2")

    report = deliver_slot(ctx, "prod", "monitao-monitor-7-incident-a2")

    assert (report.ended, report.finished) == ("empty", 1)
    assert gates == [1]
    assert redis_conn.hget(ctx.keys.event(event_id), "state") == "delivered"


def test_an_admission_is_given_back_when_the_event_cannot_be_sent(
    start, sim, redis_conn
) -> None:
    ctx, producer = start(100)
    endpoint = endpoint_id(sim.events_url)
    # the circuit is open and its interval over: the next request goes as the probe
    redis_conn.hset(ctx.keys.circuit(endpoint), mapping={
        "failures": ctx.settings.circuit_threshold, "open_until": 0, "interval": 1000})
    event_id = trigger(producer, "a3")
    redis_conn.hset(ctx.keys.event(event_id), "event", "{not json")

    report = deliver_slot(ctx, "prod", "monitao-monitor-7-incident-a3")

    assert report.finished == 1
    assert redis_conn.hget(ctx.keys.event(event_id), "reason") == "malformed"
    assert sim.received() == []
    # the gate had admitted it as the probe: the window place and the probe are given back
    assert redis_conn.zcard(ctx.keys.rate_window("prod")) == 0
    assert not redis_conn.exists(ctx.keys.circuit_probe(endpoint))


def test_a_slot_over_budget_is_sent_away_by_acquire(start, sim, redis_conn) -> None:
    ctx, producer = start(1)
    trigger(producer, "b1")
    second = trigger(producer, "b2")
    gates = count_gates(ctx)
    assert deliver_slot(ctx, "prod", "monitao-monitor-7-incident-b1").finished == 1

    report = deliver_slot(ctx, "prod", "monitao-monitor-7-incident-b2")

    assert (report.ended, report.finished) == ("waiting", 0)
    assert gates == []
    assert redis_conn.hget(ctx.keys.event(second), "state") == "pending"
    slot = slot_of("prod", "monitao-monitor-7-incident-b2")
    assert not redis_conn.exists(ctx.keys.lease(slot))  # given back until its turn
    due_in = redis_conn.zscore(ctx.keys.schedule, slot) - timeline.redis_millis(redis_conn)
    assert 50_000 < due_in <= 60_000
    [waited] = [e for e in timeline.read(redis_conn, ctx.keys, "b2")
                if e["stage"] == "rate_limited"]
    assert (waited["reason"], waited["event_id"], waited["destination"]) == (
        "rate_limit", second, "prod")
    assert len(sim.received()) == 1
