"""A script redis-py sends again because its reply was lost (a connection dropped after
Redis ran it): the finish and retry scripts answer the second call without recording the
outcome twice. Real Redis and simulator; the scripts run for real, twice."""

from __future__ import annotations

import time
from typing import Any

from config.keyspace import slot_of
from config.settings import Settings
from producer import AlertProducer
from worker import timeline
from worker.context import FleetContext
from worker.delivery import deliver_slot, endpoint_id

DEDUP = "monitao-monitor-8-incident-twice"



def sent_twice(ctx: FleetContext, name: str) -> list[Any]:
    """Make this thread's `name` script run twice per call, as a client retry after a lost
    reply does, and answer with the second reply; returns the replies."""
    scripts, replies = ctx.scripts, []
    script = getattr(scripts, name)

    def twice(**kwargs: Any) -> Any:
        replies.append(script(**kwargs))
        replies.append(script(**kwargs))
        return replies[-1]

    setattr(scripts, name, twice)
    return replies


def stages(ctx: FleetContext, redis_conn) -> list[str]:
    return [e["stage"] for e in timeline.read(redis_conn, ctx.keys, "twice")]


def send(settings: Settings, destinations, redis_conn, *actions: str) -> list[str]:
    producer = AlertProducer(settings, destinations=destinations, redis=redis_conn)
    return producer.send_many([{"action": action, "monitor_id": "8", "incident_id": "twice",
                                "summary": "[DOWN] x"} for action in actions])


def test_a_finish_sent_twice_is_recorded_once(ctx, settings, destinations, sim,
                                              redis_conn) -> None:
    replies = sent_twice(ctx, "finish")
    trigger, resolve = send(settings, destinations, redis_conn, "trigger", "resolve")

    report = deliver_slot(ctx, "prod", DEDUP)

    assert (report.ended, report.finished) == ("empty", 2)
    assert [e["event_action"] for e in sim.received()] == ["trigger", "resolve"]
    assert stages(ctx, redis_conn).count("delivered") == 2  # one each, not two each
    assert stages(ctx, redis_conn).count("attempt") == 2
    # the repeated call answered as the first did: one event left after the trigger, then
    # none and the slot released
    assert [int(r[0]) for r in replies] == [1, 1, 0, 0]
    assert [int(r[3]) for r in replies] == [0, 0, 1, 1]
    assert redis_conn.zscore(ctx.keys.schedule, slot_of("prod", DEDUP)) is None
    assert {redis_conn.hget(ctx.keys.event(i), "state") for i in (trigger, resolve)} == {
        "delivered"}


def test_a_retry_sent_twice_counts_one_failure(ctx, settings, destinations, sim,
                                               redis_conn) -> None:
    replies = sent_twice(ctx, "retry")
    sim.set_faults(fail_next=1, error_status=503)
    [trigger] = send(settings, destinations, redis_conn, "trigger")

    assert deliver_slot(ctx, "prod", DEDUP).ended == "waiting"

    circuit = ctx.keys.circuit(endpoint_id(destinations["prod"].url))
    assert redis_conn.hget(circuit, "failures") == "1"
    assert stages(ctx, redis_conn).count("retry_scheduled") == 1
    assert stages(ctx, redis_conn).count("attempt") == 1
    assert redis_conn.hget(ctx.keys.event(trigger), "attempts") == "1"
    assert 0 < int(replies[1][0]) <= int(replies[0][0])  # the hold still to run

    deadline = time.monotonic() + 10
    while deliver_slot(ctx, "prod", DEDUP).ended != "empty":
        assert time.monotonic() < deadline, "the trigger was not delivered after its backoff"
        time.sleep(0.05)
    assert redis_conn.hget(ctx.keys.event(trigger), "state") == "delivered"
    assert not redis_conn.exists(circuit)


def test_an_event_replayed_during_the_pass_that_dead_lettered_it_is_finished_again(
    ctx, settings, destinations, sim, redis_conn
) -> None:
    # the trigger is too old to send: dead-lettered by a finish that keeps the slot, and
    # replayed by an operator before the same pass looks at the mailbox again
    from worker.replay import Replayer

    [trigger] = send(settings, destinations, redis_conn, "trigger")
    redis_conn.hset(ctx.keys.event(trigger), "enqueued_at", 1)
    scripts, replayed = ctx.scripts, []
    take_head = scripts.take_head

    def replay_first(**kwargs: Any) -> Any:
        if not replayed:
            replayed.extend(Replayer(redis_conn, settings).replay([trigger]))
        return take_head(**kwargs)

    scripts.take_head = replay_first  # type: ignore[method-assign]

    report = deliver_slot(ctx, "prod", DEDUP)

    assert [d.outcome for d in replayed] == ["queued"]
    assert (report.ended, report.finished) == ("empty", 2)
    assert redis_conn.hget(ctx.keys.event(trigger), "state") == "delivered"
    assert len(sim.received()) == 1  # sent once, not again and again
    assert stages(ctx, redis_conn).count("delivered") == 1
