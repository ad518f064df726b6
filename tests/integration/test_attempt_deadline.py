"""No request leaves a worker after its lease has run out (issue 16, case 1), reproduced as
the review did: lease 3 s, connect 1 s, read 1 s, and a 6 s stall in one worker's DNS
lookup while a second worker delivers the incident's trigger and resolve. Two workers'
passes in threads, each with its own context; real Redis and the simulator over HTTP."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any

import pytest

from config.destinations import parse_destinations
from config.settings import load_settings
from producer import AlertProducer
from tests.conftest import FAST
from worker import timeline
from worker.app import create_app
from worker.context import FleetContext
from worker.delivery import deliver_slot

STALL_SECONDS = 6.0


@pytest.fixture
def stalled_lookups(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """`slow.test` resolves to 127.0.0.1 after a 6 s stall, `fast.test` at once; the event is
    set when a stalled lookup begins."""
    real = socket.getaddrinfo
    began = threading.Event()

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.test":
            began.set()
            time.sleep(STALL_SECONDS)  # the stall under test, not a synchronisation
        if host in ("slow.test", "fast.test"):
            host = "127.0.0.1"
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return began


def context(settings: Any, sim: Any, routing_key: str, host: str) -> FleetContext:
    url = sim.events_url.replace("127.0.0.1", host)
    return FleetContext(settings, parse_destinations(
        {"destinations": {"prod": {"routing_key": routing_key, "events_url": url,
                                   "rate_limit_per_minute": 100_000}}}, environ={}))


def test_a_worker_stalled_in_a_lookup_sends_nothing_after_its_lease(
    redis_url: str, prefix: str, sim: Any, routing_key: str, redis_conn: Any,
    stalled_lookups: threading.Event,
) -> None:
    settings = load_settings(redis_url=redis_url, key_prefix=prefix, **{
        **FAST, "lease_seconds": 3.0, "http_connect_timeout": 1.0, "http_read_timeout": 1.0})
    slow = context(settings, sim, routing_key, "slow.test")
    fast = context(settings, sim, routing_key, "fast.test")
    incident = f"dns-{uuid.uuid4().hex[:6]}"
    dedup_key = f"monitao-monitor-4-incident-{incident}"
    producer = AlertProducer(settings, destinations=fast.destinations, redis=redis_conn,
                             celery_app=create_app(settings, fast.destinations.file))
    trigger, resolve = producer.send_many([
        {"action": "trigger", "monitor_id": "4", "incident_id": incident, "summary": "down"},
        {"action": "resolve", "monitor_id": "4", "incident_id": incident}])

    took: list[float] = []

    def stalled_pass() -> None:
        started = time.monotonic()
        deliver_slot(slow, "prod", dedup_key)
        took.append(time.monotonic() - started)

    stalled = threading.Thread(target=stalled_pass)
    stalled.start()
    try:
        assert stalled_lookups.wait(10), "the first worker never looked the host up"
        # the second worker delivers both events as soon as the slot is free again
        deadline = time.monotonic() + 20
        while {redis_conn.hget(producer.keys.event(i), "state") for i in (trigger, resolve)} != {
                "delivered"}:
            assert time.monotonic() < deadline, "the second worker never delivered the incident"
            deliver_slot(fast, "prod", dedup_key)
            time.sleep(0.05)
        stalled.join(STALL_SECONDS + 10)  # whatever the stalled worker would send, it has
        assert not stalled.is_alive()

        arrived = [e["event_action"] for e in sim.received() if e["dedup_key"] == dedup_key]
        assert arrived == ["trigger", "resolve"], arrived
        assert [i["status"] for i in sim.incidents()] == ["resolved"]
        # the stalled worker gave the lookup up at its connect timeout, having sent nothing
        assert took and took[0] < STALL_SECONDS - 2, took
        errors = [e.get("error") for e in timeline.read(redis_conn, producer.keys, incident)
                  if e["stage"] == "attempt" and e.get("error")]
        assert all("ConnectTimeout" in error for error in errors), errors
    finally:
        stalled.join(STALL_SECONDS + 10)
        slow.close()
        fast.close()


class DyingPoster:
    """A poster whose request raises after the gate let it go: `error` or a dead worker."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def open(self, url: str) -> None:
        pass

    def post(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


def send_incident(settings: Any, ctx: FleetContext, redis_conn: Any,
                  incident: str) -> list[str]:
    producer = AlertProducer(settings, destinations=ctx.destinations, redis=redis_conn,
                             celery_app=create_app(settings, ctx.destinations.file))
    return producer.send_many([
        {"action": "trigger", "monitor_id": "5", "incident_id": incident, "summary": "down"},
        {"action": "resolve", "monitor_id": "5", "incident_id": incident}])


def test_a_request_left_in_flight_by_a_dead_pass_makes_the_next_action_wait(
    redis_url: str, prefix: str, destinations: Any, sim: Any, redis_conn: Any,
) -> None:
    settings = load_settings(redis_url=redis_url, key_prefix=prefix, **{
        **FAST, "lease_seconds": 3.0, "http_connect_timeout": 0.5, "http_read_timeout": 0.5,
        "uncertain_window_seconds": 1.0})
    ctx = FleetContext(settings, destinations)
    incident = f"dead-{uuid.uuid4().hex[:6]}"
    dedup_key = f"monitao-monitor-5-incident-{incident}"
    trigger, resolve = send_incident(settings, ctx, redis_conn, incident)
    try:
        # the pass dies after the gate let its trigger go: PagerDuty may have it or not
        ctx.poster = lambda: DyingPoster(RuntimeError("the worker died"))  # type: ignore
        with pytest.raises(RuntimeError):
            deliver_slot(ctx, "prod", dedup_key)
        in_flight = int(redis_conn.hget(ctx.keys.event(trigger), "in_flight"))
        del ctx.poster

        deadline = time.monotonic() + 20
        while redis_conn.hget(ctx.keys.event(resolve), "state") != "delivered":
            assert time.monotonic() < deadline, "the incident was never delivered"
            deliver_slot(ctx, "prod", dedup_key)
            time.sleep(0.05)

        entries = list(timeline.read(redis_conn, ctx.keys, incident))
        waits = {e["event_id"]: e for e in entries if e.get("reason") == "uncertain_delivery"}
        # the trigger itself waits until the dead pass's deadline (+ margin) has passed, the
        # resolve a window longer, so the lost trigger cannot land after it
        assert waits[trigger]["retry_at"] == in_flight + 2000
        assert waits[resolve]["retry_at"] == in_flight + 3000
        resolved_at = next(e for e in entries
                           if e["stage"] == "delivered" and e["event_id"] == resolve)
        assert timeline.entry_millis(resolved_at["id"]) >= in_flight + 3000
        assert [e["event_action"] for e in sim.received()] == ["trigger", "resolve"]
        # and since that trigger might still land, the resolve is to be sent once more
        assert redis_conn.hget(ctx.keys.event(f"{resolve}:confirm"), "state") == "pending"
    finally:
        ctx.close()


def test_an_abandoned_attempt_gives_its_place_back_and_blames_nobody(
    ctx: FleetContext, settings: Any, sim: Any, redis_conn: Any,
) -> None:
    from worker.delivery import endpoint_id
    from worker.sender import DeadlinePassed

    incident = f"late-{uuid.uuid4().hex[:6]}"
    dedup_key = f"monitao-monitor-5-incident-{incident}"
    trigger, _ = send_incident(settings, ctx, redis_conn, incident)
    ctx.poster = lambda: DyingPoster(DeadlinePassed("stalled after the gate"))  # type: ignore
    assert deliver_slot(ctx, "prod", dedup_key).ended == "waiting"
    del ctx.poster

    keys = ctx.keys
    assert redis_conn.zcard(keys.rate_window("prod")) == 0  # the admission was given back
    assert not redis_conn.exists(keys.circuit(endpoint_id(ctx.destinations["prod"].url)))
    assert not redis_conn.exists(keys.uncertain(f"prod/{dedup_key}"))  # nothing went out
    [attempt] = [e for e in timeline.read(redis_conn, keys, incident) if e["stage"] == "attempt"]
    assert attempt["error"].startswith("abandoned")
    assert sim.requests() == []
    assert redis_conn.hmget(keys.event(trigger), "state", "attempts") == ["pending", "1"]
