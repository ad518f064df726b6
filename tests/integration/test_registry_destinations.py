"""A run-time destination works as a file one does, with real worker threads, Redis and the
simulator: coalescing, maintenance windows, timeline, dead letters (`dlq show` rebuilds the
body with the key masked), replay; and a removed destination's events are dead-lettered
as `destination_removed`, not `unknown_destination`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from config.keyspace import Keyspace
from config.lookup import DestinationLookup
from config.maintenance import MaintenanceWindow
from config.registry import Registry
from config.secrets import generate_key, parse_key_ring
from tests.conftest import Fleet, random_routing_key
from worker import dead_letters, timeline
from worker.maintenance import add_window
from worker.replay import Replayer


@pytest.fixture
def ring() -> str:
    return generate_key()


@pytest.fixture
def registry(redis_conn, prefix: str, ring: str, destinations) -> Registry:
    return Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(ring),
                    file_destinations=destinations)


@pytest.fixture
def fleet(make_fleet, ring: str) -> Iterator[Fleet]:
    with make_fleet(secret_keys=ring) as running:
        yield running


def add(registry: Registry, sim, name: str, **settings) -> str:
    key = random_routing_key()
    registry.add(name, {"events_url": sim.events_url, "rate_limit_per_minute": 100_000,
                        **settings}, key)
    return key


def event(destination: str, incident: str, action: str = "trigger", **extra) -> dict:
    fields = {"destination": destination, "action": action, "monitor_id": "5",
              "incident_id": incident, **extra}
    if action == "trigger":
        fields.setdefault("summary", "[DOWN] x")
    return fields


def test_coalescing_and_a_suppress_window_apply_to_a_run_time_destination(
    fleet: Fleet, registry: Registry, sim, redis_conn
) -> None:
    add(registry, sim, "storm", coalesce=True)
    ids = fleet.producer.send_many([event("storm", "f"), event("storm", "f", "resolve")])
    assert set(fleet.wait_final(ids).values()) == {"superseded"}
    add(registry, sim, "quiet")
    now = datetime.now(UTC)
    add_window(redis_conn, fleet.keys, MaintenanceWindow(
        id="q1", destination="quiet", start=now - timedelta(minutes=1),
        end=now + timedelta(hours=1), mode="suppress"))
    [held] = fleet.producer.send_many([event("quiet", "q")])
    assert fleet.wait_final([held]) == {held: "suppressed"}
    assert sim.received() == []


def test_timeline_dead_letter_body_and_replay_of_a_run_time_destination(
    fleet: Fleet, registry: Registry, sim, redis_conn
) -> None:
    key = add(registry, sim, "acme", severity_map={"critical": "warning"})
    sim.set_faults(force_status=400)
    [rejected] = fleet.producer.send_many([event("acme", "t", level="critical")])
    assert fleet.wait_final([rejected]) == {rejected: "dead_lettered"}
    sim.set_faults(force_status=None)
    stages = [e["stage"] for e in timeline.read(redis_conn, fleet.keys, "t")]
    assert stages == ["enqueued", "attempt", "dead_lettered"]
    lookup = DestinationLookup(redis_conn, fleet.keys)  # a command's: no key ring
    letter = dead_letters.show(redis_conn, fleet.keys, rejected, lookup)
    assert letter["body"]["routing_key"] == dead_letters.MASK
    assert letter["body"]["payload"]["severity"] == "warning"
    assert key not in repr(letter)
    [decision] = Replayer(redis_conn, fleet.settings).replay([rejected])
    assert decision.outcome == "queued"
    assert fleet.wait_final([rejected]) == {rejected: "delivered"}


def test_a_removed_destination_is_told_apart_from_an_unknown_one(
    fleet: Fleet, registry: Registry, sim, redis_conn
) -> None:
    add(registry, sim, "gone")
    sim.set_faults(force_status=503)
    [pending] = fleet.producer.send_many([event("gone", "g")])
    assert registry.remove("gone", confirm=True).pending_events == 1
    assert fleet.wait_final([pending]) == {pending: "dead_lettered"}
    assert redis_conn.hget(fleet.keys.event(pending), "reason") == "destination_removed"
    sim.set_faults(force_status=None)
    # an event for a name that never existed (past the producer, as a stale one would be)
    from producer.enqueue import enqueue_arguments, register_enqueue
    from producer.event import parse_event

    stray = parse_event(event("never", "n"))
    keys, args = enqueue_arguments(stray, "never", fleet.keys, fleet.settings)
    register_enqueue(redis_conn)(keys=keys, args=args)
    assert fleet.wait_final([stray.event_id]) == {stray.event_id: "dead_lettered"}
    assert redis_conn.hget(fleet.keys.event(stray.event_id), "reason") == "unknown_destination"
