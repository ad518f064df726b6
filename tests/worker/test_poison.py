"""Poison messages: random bytes and random JSON in Redis, garbage on the broker."""

from __future__ import annotations

import json
import uuid

import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from config.keyspace import slot_of
from tests.conftest import Fleet, wait_until
from worker.context import FleetContext
from worker.delivery import deliver_slot

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)



def plant(client: redis.Redis, ctx: FleetContext, raw: bytes) -> tuple[str, str]:
    """Store `raw` as a slot's only event, as something other than the producer might."""
    dedup_key, event_id = f"poison-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    keys, slot = ctx.keys, slot_of("prod", dedup_key)
    client.hset(keys.event(event_id), mapping={"event": raw, "state": "pending",
                                                "slot": slot, "enqueued_at": 0})
    client.rpush(keys.mailbox(slot), event_id)
    client.zadd(keys.schedule, {slot: 0})
    return dedup_key, event_id


def assert_dead_lettered_with_raw(ctx: FleetContext, dedup_key: str, event_id: str,
                                  raw: bytes) -> None:
    report = deliver_slot(ctx, "prod", dedup_key)
    assert report.finished == 1 and report.ended == "empty"
    fields = ctx.redis.hgetall(ctx.keys.event(event_id))
    assert fields["state"] == "dead_lettered" and fields["reason"] == "malformed"
    assert fields["event"].encode("utf-8", "surrogateescape") == raw
    assert ctx.redis.zscore(ctx.keys.dead_letters, event_id) is not None
    assert ctx.redis.llen(ctx.keys.mailbox(slot_of("prod", dedup_key))) == 0


@hypothesis_settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_random_bytes_as_a_stored_event_are_dead_lettered(ctx, redis_url, raw: bytes) -> None:
    binary = redis.Redis.from_url(redis_url)
    dedup_key, event_id = plant(binary, ctx, raw)
    assert_dead_lettered_with_raw(ctx, dedup_key, event_id, raw)


@hypothesis_settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=JSON)
def test_random_json_as_a_stored_event_is_dead_lettered(ctx, redis_url, document) -> None:
    raw = json.dumps(document).encode()
    binary = redis.Redis.from_url(redis_url)
    dedup_key, event_id = plant(binary, ctx, raw)
    assert_dead_lettered_with_raw(ctx, dedup_key, event_id, raw)


def test_a_mailbox_entry_without_a_record_is_dead_lettered(ctx, redis_conn) -> None:
    slot = slot_of("prod", "orphan")
    redis_conn.rpush(ctx.keys.mailbox(slot), "no-such-event")
    redis_conn.zadd(ctx.keys.schedule, {slot: 0})
    assert deliver_slot(ctx, "prod", "orphan").finished == 1
    fields = redis_conn.hgetall(ctx.keys.event("no-such-event"))
    assert fields["reason"] == "malformed" and fields["raw"] == "no-such-event"


def test_garbage_on_the_broker_is_dead_lettered_and_the_worker_goes_on(fleet: Fleet) -> None:
    app = fleet.producer.celery
    with app.producer_or_acquire() as producer:
        producer.publish(b"\xff\xfe not json {", content_type="application/json",
                         content_encoding="binary", routing_key="deliver",
                         exchange="deliver", headers={"task": "monitao.deliver",
                                                      "id": uuid.uuid4().hex})
    app.send_task("monitao.deliver", args=[1, ["not", "a", "key"]])
    app.send_task("monitao.nonexistent", args=["prod", "x"])

    def malformed() -> list[dict]:
        ids = fleet.redis.zrange(fleet.keys.dead_letters, 0, -1)
        return [fleet.redis.hgetall(fleet.keys.event(i)) for i in ids]

    letters = wait_until(lambda: len(malformed()) >= 3 and malformed(), timeout=20,
                         message="three malformed dead letters")
    origins = sorted(letter["origin"] for letter in letters)
    assert origins == ["deliver task arguments", "message for an unknown task",
                       "undecodable message"], origins
    raw = next(x["raw"] for x in letters if x["origin"] == "undecodable message")
    assert raw.encode("utf-8", "surrogateescape").startswith(b"\xff\xfe not json")
    # and the worker still delivers
    [event_id] = fleet.producer.send_many([{"action": "trigger", "monitor_id": 1,
                                            "incident_id": 1, "summary": "still here"}])
    assert fleet.wait_final([event_id]) == {event_id: "delivered"}
