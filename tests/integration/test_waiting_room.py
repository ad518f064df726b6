"""The rate budget's waiting room, at the gate script itself on a real Redis: an older
waiter keeps its place while its task is queued, a stalled one does not block the rest."""

from __future__ import annotations

import json

from config.keyspace import slot_of
from worker.admission import Admission
from worker.context import FleetContext

WINDOW_MS, LEASE_MS, CLAIM_MS = 2_000, 10_000, 5_000



def redis_now_ms(redis_conn) -> int:
    seconds, micros = redis_conn.time()
    return seconds * 1000 + micros // 1000


def gate(ctx: FleetContext, redis_conn, name: str, enqueued_at: int) -> Admission:
    """Run the gate for slot `name` of destination prod with a budget of one request."""
    keys, slot = ctx.keys, slot_of("prod", name)
    redis_conn.set(keys.lease(slot), f"token-{name}", px=LEASE_MS)
    redis_conn.zadd(keys.schedule, {slot: 0})
    raw = ctx.scripts.gate(
        keys=[keys.lease(slot), keys.schedule, keys.timeline(name), keys.circuit("e"),
              keys.circuit_waiting("e"), keys.circuit_probe("e"), keys.cooldown("prod"),
              keys.rate_window("prod"), keys.rate_waiting("prod"), keys.event(name)],
        args=[f"token-{name}", slot, name, enqueued_at, 1, WINDOW_MS, LEASE_MS, 10,
              60_000, 60_000, json.dumps(["event_id", name]), CLAIM_MS],
    )
    return Admission.from_script(raw)


def test_an_older_waiter_whose_task_is_queued_keeps_its_place(ctx, redis_conn) -> None:
    keys, older = ctx.keys, slot_of("prod", "older")
    now = redis_now_ms(redis_conn)
    # `older` waited for the budget; its turn came and a dispatcher claimed it: its task is
    # in the queue, so the schedule holds it for `claim_seconds`, past one window
    redis_conn.zadd(keys.rate_waiting("prod"), {older: now - 10_000})
    redis_conn.zadd(keys.schedule, {older: now + CLAIM_MS})

    admission = gate(ctx, redis_conn, "younger", enqueued_at=now - 5_000)

    assert (admission.allowed, admission.reason) == (False, "rate_limit")
    assert redis_conn.zcard(keys.rate_window("prod")) == 0  # the free place is left for `older`
    assert redis_conn.zrange(keys.rate_waiting("prod"), 0, -1) == [
        older, slot_of("prod", "younger")]


def test_a_waiter_stalled_for_longer_than_a_claim_does_not_block_the_rest(
    ctx, redis_conn
) -> None:
    keys, stalled = ctx.keys, slot_of("prod", "stalled")
    now = redis_now_ms(redis_conn)
    # backing off, or held by a maintenance window, for an hour
    redis_conn.zadd(keys.rate_waiting("prod"), {stalled: now - 10_000})
    redis_conn.zadd(keys.schedule, {stalled: now + 3_600_000})

    assert gate(ctx, redis_conn, "younger", enqueued_at=now - 5_000).allowed
