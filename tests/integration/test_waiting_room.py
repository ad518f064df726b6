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


def gate(ctx: FleetContext, redis_conn, name: str, enqueued_at: int,
         budget: int = 1) -> Admission:
    """Run the gate for slot `name` of destination prod with a budget of `budget` requests."""
    keys, slot = ctx.keys, slot_of("prod", name)
    redis_conn.set(keys.lease(slot), f"token-{name}", px=LEASE_MS)
    redis_conn.zadd(keys.schedule, {slot: redis_now_ms(redis_conn)})
    raw = ctx.scripts.gate(
        keys=[keys.lease(slot), keys.schedule, keys.timeline(name), keys.circuit("e"),
              keys.circuit_waiting("e"), keys.circuit_probe("e"), keys.cooldown("prod"),
              keys.rate_window("prod"), keys.rate_waiting("prod"), keys.event(name)],
        args=[f"token-{name}", slot, name, enqueued_at, budget, WINDOW_MS, LEASE_MS, 10,
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


def test_a_waiter_beyond_the_first_200_is_not_overtaken(ctx, redis_conn) -> None:
    keys, budget = ctx.keys, 250
    now = redis_now_ms(redis_conn)
    older = [slot_of("prod", f"w{n:03d}") for n in range(300)]
    # 300 live waiters (their turns within the window), then `last`, the youngest of them
    redis_conn.zadd(keys.rate_waiting("prod"), {s: now - 100_000 + n for n, s in enumerate(older)})
    redis_conn.zadd(keys.schedule, dict.fromkeys(older, now + 1_000))
    redis_conn.zadd(keys.rate_waiting("prod"), {slot_of("prod", "last"): now - 50_000})

    # 250 requests are free and 300 older waiters are ahead: `last` must wait its turn
    admission = gate(ctx, redis_conn, "last", enqueued_at=now - 50_000, budget=budget)
    assert (admission.allowed, admission.reason) == (False, "rate_limit")
    # a newcomer is behind all of them too
    assert not gate(ctx, redis_conn, "newcomer", enqueued_at=now - 1_000, budget=budget).allowed
    # the oldest goes, and so does the 250th (249 ahead of it), but not the 251st
    assert gate(ctx, redis_conn, "w000", enqueued_at=now - 100_000, budget=budget).allowed
    assert gate(ctx, redis_conn, "w249", enqueued_at=now - 100_000 + 249, budget=budget).allowed
    assert not gate(ctx, redis_conn, "w250", enqueued_at=now - 100_000 + 250,
                    budget=budget).allowed
    assert redis_conn.zcard(keys.rate_window("prod")) == 2


def test_a_stalled_waiter_that_comes_back_keeps_its_place(ctx, redis_conn) -> None:
    keys, stalled, younger = ctx.keys, slot_of("prod", "stalled"), slot_of("prod", "younger")
    now = redis_now_ms(redis_conn)
    redis_conn.zadd(keys.rate_waiting("prod"), {stalled: now - 10_000, younger: now - 5_000})
    redis_conn.zadd(keys.schedule, {stalled: now + 3_600_000, younger: now + 1_000})
    # `stalled` is held for an hour: it leaves the room and does not block `younger`...
    assert gate(ctx, redis_conn, "other", enqueued_at=now - 7_000, budget=2).allowed
    assert redis_conn.zscore(keys.rate_waiting("prod"), stalled) is None
    # ...and when it comes back (the budget now has one place left) it is first again
    assert gate(ctx, redis_conn, "stalled", enqueued_at=now - 10_000, budget=2).allowed
    assert not gate(ctx, redis_conn, "younger", enqueued_at=now - 5_000, budget=2).allowed
