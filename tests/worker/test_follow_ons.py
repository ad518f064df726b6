"""Follow-on deliveries: which queued messages a task takes (real Redis, messages published
by Celery itself), what it leaves for Celery, and a storm delivered by fewer tasks than keys.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from config import defaults
from config.keyspace import Keyspace
from config.settings import Settings
from producer import AlertProducer
from tests.conftest import Fleet
from worker import dead_letters, timeline
from worker.app import create_app
from worker.broker import publish_deliveries
from worker.context import FleetContext
from worker.delivery import deliver_slot
from worker.follow_ons import QueuedSlot, deliver_follow_ons, slot_from_body


@pytest.fixture
def ctx(settings: Settings) -> Iterator[FleetContext]:
    context = FleetContext(settings, {})
    yield context
    context.close()


def queue(ctx: FleetContext) -> str:
    return ctx.keys.queue(defaults.QUEUE_NAME)


def test_takes_deliver_messages_oldest_first(ctx: FleetContext, redis_conn: redis.Redis) -> None:
    app = create_app(ctx.settings, {})
    publish_deliveries(app, [("prod", "k1"), ("prod", "k2")])
    publish_deliveries(app, [("other", "k3")])

    taken = [ctx.follow_ons.take() for _ in range(4)]

    assert taken == [QueuedSlot("prod", "k1"), QueuedSlot("prod", "k2"),
                     QueuedSlot("other", "k3"), None]
    assert redis_conn.llen(queue(ctx)) == 0


def test_leaves_what_celery_must_handle_in_the_queue(
    ctx: FleetContext, redis_conn: redis.Redis
) -> None:
    app = create_app(ctx.settings, {})
    app.send_task("some.other_task", args=(1,))
    assert ctx.follow_ons.take() is None
    app.send_task(defaults.DELIVER_TASK, args=("prod", "later"), countdown=60)
    assert ctx.follow_ons.take() is None
    redis_conn.lpush(queue(ctx), b"\xff not json at all")
    assert ctx.follow_ons.take() is None

    # each one put back where it was, the oldest still next for Celery's consumer
    left = redis_conn.lrange(queue(ctx), 0, -1)
    assert len(left) == 3 and left[0] == "\udcff not json at all"  # surrogate-escaped
    assert "some.other_task" in left[2]


def test_a_deliver_message_with_bad_arguments_becomes_a_malformed_dead_letter(
    ctx: FleetContext, redis_conn: redis.Redis
) -> None:
    app = create_app(ctx.settings, {})
    app.send_task(defaults.DELIVER_TASK, args=(1, ["x"]))
    publish_deliveries(app, [("prod", "good")])

    assert ctx.follow_ons.take() is None  # filed, and the task's follow-ons end there
    assert ctx.follow_ons.take() == QueuedSlot("prod", "good")
    letters = list(dead_letters.iter_dead_letters(redis_conn, ctx.keys,
                                                  dead_letters.Filters(reason="malformed")))
    assert len(letters) == 1
    assert redis_conn.hget(ctx.keys.event(letters[0]["event_id"]), "origin") == (
        "deliver task arguments")


def test_slot_from_body_refuses_what_is_not_two_strings() -> None:
    assert slot_from_body('[["d", "k"], {}, {}]', "") == QueuedSlot("d", "k")
    for body in ('[["d"], {}, {}]', '[["d", 2], {}, {}]', "[]", "{}", "nope", '"x"'):
        assert slot_from_body(body, "") is None, body
    assert slot_from_body("!!!", "base64") is None


def test_no_follow_on_once_the_deadline_passed_or_the_worker_stops(
    ctx: FleetContext, redis_conn: redis.Redis
) -> None:
    app = create_app(ctx.settings, {})
    publish_deliveries(app, [("prod", "k1"), ("prod", "k2"), ("prod", "k3")])
    passes: list[tuple[str, str]] = []

    def deliver(destination: str, dedup_key: str) -> None:
        passes.append((destination, dedup_key))

    assert deliver_follow_ons(ctx, deliver, deadline=time.monotonic() - 1) == 0
    ctx.stopping.set()
    assert deliver_follow_ons(ctx, deliver, deadline=time.monotonic() + 60) == 0
    assert passes == [] and redis_conn.llen(queue(ctx)) == 3

    ctx.stopping.clear()
    assert deliver_follow_ons(ctx, deliver, deadline=time.monotonic() + 60) == 3
    assert passes == [("prod", "k1"), ("prod", "k2"), ("prod", "k3")]


def test_a_storm_is_delivered_by_fewer_tasks_than_keys(fleet: Fleet) -> None:
    # 8 worker threads, 40 keys, each request 300 ms: the threads' own messages are
    # reserved by Celery, the rest wait in the queue until a task takes them as follow-ons
    fleet.sim.set_faults(latency_ms=300)
    ids = fleet.producer.send_many([
        {"action": "trigger", "monitor_id": str(n), "incident_id": f"storm-{n}",
         "summary": f"[DOWN] {n}"} for n in range(40)])

    states = fleet.wait_final(ids)

    assert set(states.values()) == {"delivered"}
    task_ids = set()
    for n in range(40):
        task_ids |= {e["task_id"] for e in timeline.read(fleet.redis, fleet.keys, f"storm-{n}")
                     if e["stage"] == "attempt"}
    # without follow-ons every key is its own task: 40 task ids
    assert len(task_ids) <= 16
    assert fleet.redis.llen(Keyspace(fleet.settings.key_prefix).queue(defaults.QUEUE_NAME)) == 0


def test_a_taken_message_whose_pass_never_ran_is_recovered_when_the_claim_ends(
    make_fleet, settings: Settings, destinations, redis_conn: redis.Redis
) -> None:
    producer = AlertProducer(settings, destinations=destinations, redis=redis_conn)
    [event_id] = producer.send_many([
        {"action": "trigger", "monitor_id": "lost", "incident_id": "lost",
         "summary": "[DOWN] lost"}])
    taker = FleetContext(settings, destinations)
    try:
        # a worker took the message as a follow-on and died before leasing its key
        assert taker.follow_ons.take() is not None
    finally:
        taker.close()
    assert redis_conn.llen(Keyspace(settings.key_prefix).queue(defaults.QUEUE_NAME)) == 0
    assert redis_conn.hget(Keyspace(settings.key_prefix).event(event_id), "state") == "pending"

    with make_fleet() as fleet:  # claim_seconds is 5 s in the test settings
        assert fleet.wait_final([event_id], timeout=30) == {event_id: "delivered"}


@pytest.mark.parametrize("wanted", [True, False])
def test_the_finish_that_empties_a_key_takes_the_next_message_when_asked(
    wanted: bool, settings: Settings, destinations, sim, redis_conn: redis.Redis
) -> None:
    producer = AlertProducer(settings, destinations=destinations, redis=redis_conn)
    producer.send_many([
        {"action": "trigger", "monitor_id": str(n), "incident_id": f"f{n}",
         "summary": f"[DOWN] {n}"} for n in (1, 2)])
    ctx = FleetContext(settings, destinations)
    try:
        first = ctx.follow_ons.take()  # as Celery's consumer would receive it
        assert first is not None

        report = deliver_slot(ctx, first.destination, first.dedup_key,
                              take_next=lambda: wanted)

        assert (report.ended, report.finished) == ("empty", 1)
        left = redis_conn.llen(ctx.keys.queue(defaults.QUEUE_NAME))
        if wanted:
            second = ctx.follow_ons.take(report.taken)
            assert second is not None and second.dedup_key.endswith("-f2")
            assert left == 0
        else:
            assert report.taken is None and left == 1
    finally:
        ctx.close()
