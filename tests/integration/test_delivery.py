"""The pipeline end to end: producer -> Redis -> Celery worker threads -> simulator."""

from __future__ import annotations

import logging
import random

import pytest
from celery.signals import before_task_publish

from tests.conftest import Fleet, wait_until
from worker import dead_letters, timeline


def incident(monitor: int | str, number: int | str, action: str, **extra: object) -> dict:
    event = {"action": action, "monitor_id": str(monitor), "incident_id": str(number), **extra}
    if action == "trigger":
        event.setdefault("summary", f"[DOWN] monitor {monitor} - HTTP 503")
    return event


def test_trigger_then_resolve_delivered_in_order_and_incident_resolved(fleet: Fleet) -> None:
    ids = fleet.producer.send_many([incident(123, 456, "trigger"), incident(123, 456, "resolve")])

    assert fleet.wait_final(ids) == {ids[0]: "delivered", ids[1]: "delivered"}
    received = fleet.sim.received()
    assert [e["event_action"] for e in received] == ["trigger", "resolve"]
    assert {e["dedup_key"] for e in received} == {"monitao-monitor-123-incident-456"}
    [state] = fleet.sim.incidents()
    assert state["status"] == "resolved" and state["number"] == 1

    stages = [(e["stage"], e["event_id"]) for e in timeline.read(fleet.redis, fleet.keys, "456")]
    assert stages == [
        ("enqueued", ids[0]), ("enqueued", ids[1]),
        ("attempt", ids[0]), ("delivered", ids[0]),
        ("attempt", ids[1]), ("delivered", ids[1]),
    ]


def test_rejected_event_is_dead_lettered_with_pagerduty_errors(fleet: Fleet) -> None:
    fleet.sim.set_faults(force_status=400)
    [event_id] = fleet.producer.send_many([incident(7, 8, "trigger")])

    assert fleet.wait_final([event_id]) == {event_id: "dead_lettered"}
    [letter] = list(dead_letters.iter_dead_letters(fleet.redis, fleet.keys))
    assert letter["event_id"] == event_id
    assert letter["reason"] == "rejected"
    assert letter["attempts"] == 1
    assert letter["dedup_key"] == "monitao-monitor-7-incident-8"
    assert letter["error"] == "HTTP 400: Event object is invalid"
    assert letter["errors"] == ["status 400 forced by the simulator"]
    stages = [e["stage"] for e in timeline.read(fleet.redis, fleet.keys, "8")]
    assert stages == ["enqueued", "attempt", "dead_lettered"]


def test_server_errors_are_retried_until_delivered(fleet: Fleet) -> None:
    fleet.sim.set_faults(fail_next=3)
    ids = fleet.producer.send_many([incident(1, 2, "trigger"), incident(1, 2, "resolve")])

    assert set(fleet.wait_final(ids).values()) == {"delivered"}
    statuses = [r["status"] for r in fleet.sim.requests()]
    assert statuses == [500, 500, 500, 202, 202]
    entries = list(timeline.read(fleet.redis, fleet.keys, "2"))
    attempts = [e["attempt"] for e in entries if e["stage"] == "attempt"]
    assert attempts == [1, 2, 3, 4, 1]
    assert sum(e["stage"] == "retry_scheduled" for e in entries) == 3


@pytest.mark.slow
def test_fifty_incidents_under_thirty_percent_failures_all_resolved_in_order(
    fleet: Fleet,
) -> None:
    fleet.sim.set_faults(error_rate=0.3)
    pending = {n: [incident(n, f"i{n}", "trigger"), incident(n, f"i{n}", "resolve")]
               for n in range(50)}
    ordered, rng = [], random.Random(5)
    while pending:  # interleave incidents at random, each one's own order kept
        n = rng.choice(list(pending))
        ordered.append(pending[n].pop(0))
        if not pending[n]:
            del pending[n]
    ids = fleet.producer.send_many(ordered)

    states = fleet.wait_final(ids, timeout=120)
    assert set(states.values()) == {"delivered"}
    by_key: dict[str, list[str]] = {}
    for event in fleet.sim.received():
        by_key.setdefault(event["dedup_key"], []).append(event["event_action"])
    assert len(by_key) == 50
    for dedup_key, actions in by_key.items():
        assert actions == ["trigger", "resolve"], (dedup_key, actions)
    assert all(i["status"] == "resolved" for i in fleet.sim.incidents())
    assert sum(r["status"] == 500 for r in fleet.sim.requests()) > 0


def test_resending_an_event_id_delivers_it_once(fleet: Fleet) -> None:
    event = incident(3, 4, "trigger", event_id="monitao-evt-42")
    assert fleet.producer.send(event) == "monitao-evt-42"
    fleet.wait_final(["monitao-evt-42"])
    assert fleet.producer.send(event) == "monitao-evt-42"
    assert fleet.producer.send_many([event, event]) == ["monitao-evt-42", "monitao-evt-42"]
    # a later event of the same key proves the worker went past any duplicate
    [resolve] = fleet.producer.send_many([incident(3, 4, "resolve")])
    fleet.wait_final([resolve])

    actions = [e["event_action"] for e in fleet.sim.received()]
    assert actions == ["trigger", "resolve"]
    enqueued = [e for e in timeline.read(fleet.redis, fleet.keys, "4") if e["stage"] == "enqueued"]
    assert len(enqueued) == 2


def test_a_retrying_key_does_not_delay_other_keys(make_fleet) -> None:
    # a long backoff: the failed key waits at least 60 s (a tenth of the base)
    with make_fleet(retry_base_seconds=600, retry_cap_seconds=600) as fleet:
        fleet.sim.set_faults(fail_next=1)
        stuck = fleet.producer.send_many([incident(1, "slow", "trigger"),
                                          incident(1, "slow", "resolve")])
        wait_until(lambda: fleet.redis.hget(fleet.keys.event(stuck[0]), "attempts") == "1",
                   message="first failed attempt")
        others = fleet.producer.send_many([incident(n, f"fast{n}", "trigger") for n in range(5)])
        assert set(fleet.wait_final(others, timeout=10).values()) == {"delivered"}
        # the other keys went through while the failed key, and its resolve, still wait
        assert [fleet.state(e) for e in stuck] == ["pending", "pending"]
        received = {e["dedup_key"] for e in fleet.sim.received()}
        assert "monitao-monitor-1-incident-slow" not in received


def test_routing_key_never_reaches_redis_or_logs(
    fleet: Fleet, routing_key: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    published: list[str] = []  # every broker message: the producer's and the dispatcher's

    def capture(body: object = None, headers: object = None, **_: object) -> None:
        published.append(repr((body, headers)))

    before_task_publish.connect(capture, weak=False)
    try:
        fleet.sim.set_faults(fail_next=1)  # a retry, so the dispatcher publishes too
        ids = fleet.producer.send_many([
            incident(5, 6, "trigger", details={"note": "x"}), incident(5, 6, "resolve"),
        ])
        fleet.wait_final(ids)
        # and one dead letter, so every record type exists
        fleet.sim.set_faults(force_status=400)
        [rejected] = fleet.producer.send_many([incident(9, 9, "trigger")])
        fleet.wait_final([rejected])
    finally:
        before_task_publish.disconnect(capture)
    assert any(e["stage"] == "retry_scheduled"
               for e in timeline.read(fleet.redis, fleet.keys, "6"))
    assert len(published) >= 3 and all("monitao-monitor-" in m for m in published)
    assert not [m for m in published if routing_key in m]

    written = []
    for key in fleet.redis.scan_iter(match=f"{prefix}*"):
        written.append(key)
        kind = fleet.redis.type(key)
        if kind == "string":
            written.append(fleet.redis.get(key) or "")
        elif kind == "hash":
            written += [f"{k}={v}" for k, v in fleet.redis.hgetall(key).items()]
        elif kind == "list":
            written += fleet.redis.lrange(key, 0, -1)
        elif kind == "zset":
            written += fleet.redis.zrange(key, 0, -1)
        elif kind == "set":
            written += list(fleet.redis.smembers(key))
        elif kind == "stream":
            written += [str(fields) for _, fields in fleet.redis.xrange(key)]
    assert len(written) > 10
    assert not [w for w in written if routing_key in w]
    logged = [r.getMessage() for r in caplog.records]
    assert any("attempt" in line for line in logged)
    assert not [line for line in logged if routing_key in line]


def test_coalescing_is_off_by_default(fleet: Fleet) -> None:
    ids = fleet.producer.send_many([incident(8, "c", "trigger"), incident(8, "c", "trigger"),
                                    incident(8, "c", "resolve")])
    assert set(fleet.wait_final(ids).values()) == {"delivered"}
    assert [e["event_action"] for e in fleet.sim.received()] == ["trigger", "trigger", "resolve"]


def test_an_event_past_its_maximum_age_is_dead_lettered_as_expired(make_fleet) -> None:
    with make_fleet(max_event_age_seconds=1.0) as fleet:
        fleet.sim.set_faults(force_status=503)
        ids = fleet.producer.send_many([incident(9, "old", "trigger"),
                                        incident(9, "old", "resolve")])
        # both keep failing until they are a second old, then end as expired, in order
        assert fleet.wait_final(ids, timeout=20) == {ids[0]: "dead_lettered",
                                                     ids[1]: "dead_lettered"}
        letters = {e["event_id"]: e for e in dead_letters.iter_dead_letters(fleet.redis,
                                                                           fleet.keys)}
        assert {letters[i]["reason"] for i in ids} == {"expired"}
        assert fleet.sim.received() == []
        assert any(r["status"] == 503 for r in fleet.sim.requests())
