"""Per-minute delivery figures (worker/activity.py): what a recorder adds to Redis, how the
last hour reads back, and a real fleet's deliveries, retries, 429s and dead letters."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import redis

from config.keyspace import Keyspace
from tests.conftest import Fleet, wait_until
from worker import activity
from worker.activity import ActivityRecorder, bucket_bound, bucket_of, last_hour, percentile
from worker.timeline import redis_millis

MINUTE = 60_000


def test_buckets_and_percentiles() -> None:
    for millis in (0.5, 1, 1.5, 10, 250, 999, 12_345, 86_400_000):
        bucket = bucket_of(millis)
        assert bucket_bound(bucket - 1) < max(millis, 1) <= bucket_bound(bucket) * (1 + 1e-9)
    buckets = {bucket_of(10): 90, bucket_of(200): 9, bucket_of(5000): 1}
    assert percentile(buckets, 50) == bucket_bound(bucket_of(10))
    assert percentile(buckets, 95) == bucket_bound(bucket_of(200))
    assert percentile(buckets, 99) == bucket_bound(bucket_of(200))
    assert percentile(buckets, 100) == bucket_bound(bucket_of(5000))
    assert percentile({}, 50) is None
    assert 5000 <= bucket_bound(bucket_of(5000)) <= 5000 * activity.BUCKET_RATIO


def test_a_recorder_adds_its_counts_to_each_minute(redis_conn: redis.Redis, prefix: str) -> None:
    keys = Keyspace(prefix)
    now = redis_millis(redis_conn)
    before = now - 5 * MINUTE
    recorder = ActivityRecorder(redis_conn, keys, flush_seconds=3600)  # flushed by hand here
    try:
        for latency in [20] * 98 + [400, 9000]:
            recorder.final("prod", "delivered", now - latency, now)
        recorder.final("prod", "dead_lettered", now - 10, now)
        recorder.final("prod", "superseded", now - 10, now)  # not charted
        recorder.attempt("prod", "retry", 500, now)
        recorder.attempt("prod", "retry", None, now)  # no answer
        recorder.attempt("prod", "retry", 429, now)
        recorder.attempt("prod", "delivered", 202, now)  # counted by final
        recorder.attempt("@callback", "retry", 429, now)  # MoniTao's callback: not PagerDuty
        recorder.final("@callback", "delivered", now - 5, now)
        recorder.final("prod", "delivered", before - 50, before)
        recorder.flush()
        recorder.attempt("prod", "retry", 429, now)
        recorder.flush()  # a second flush adds to the same minute
    finally:
        recorder.close()

    minutes = last_hour(redis_conn, keys, now)
    assert len(minutes) == 60
    assert minutes[-1].start_ms == now // MINUTE * MINUTE
    current = minutes[-1]
    assert current.counts == {"delivered": 100, "retried": 2, "dead_lettered": 1,
                              "throttled": 2}
    assert current.delivered_timed == 100
    assert current.latency_ms[50] == bucket_bound(bucket_of(20))
    assert current.latency_ms[95] == bucket_bound(bucket_of(20))
    assert current.latency_ms[99] == bucket_bound(bucket_of(400))
    earlier = minutes[-6]
    assert earlier.counts["delivered"] == 1 and earlier.latency_ms[50] == bucket_bound(
        bucket_of(50))
    quiet = [m for i, m in enumerate(minutes) if i not in (54, 59)]
    assert all(sum(m.counts.values()) == 0 and m.latency_ms[99] is None for m in quiet)
    ttl = redis_conn.ttl(keys.activity(now // MINUTE))
    assert activity.KEEP_SECONDS - 60 < ttl <= activity.KEEP_SECONDS


def test_a_fleets_deliveries_retries_429s_and_dead_letters_reach_the_minutes(
        make_fleet: Callable[..., AbstractContextManager[Fleet]]) -> None:
    with make_fleet(cooldown_base_seconds=0.2, cooldown_max_seconds=0.5) as fleet:
        check_fleet(fleet)


def check_fleet(fleet: Fleet) -> None:
    keys, sim = fleet.keys, fleet.sim
    sim.set_faults(fail_next=1, error_status=500)
    first = fleet.producer.send({"action": "trigger", "monitor_id": "1", "incident_id": "1",
                                 "summary": "retried once"})
    assert fleet.wait_final([first]) == {first: "delivered"}
    sim.set_faults(fail_next=1, error_status=429)
    second = fleet.producer.send({"action": "trigger", "monitor_id": "2", "incident_id": "2",
                                  "summary": "throttled once"})
    assert fleet.wait_final([second], timeout=60) == {second: "delivered"}
    sim.set_faults(force_status=400)
    third = fleet.producer.send({"action": "trigger", "monitor_id": "3", "incident_id": "3",
                                 "summary": "rejected"})
    assert fleet.wait_final([third]) == {third: "dead_lettered"}

    def totals() -> dict[str, int] | None:
        minutes = last_hour(fleet.redis, keys, redis_millis(fleet.redis))
        found = {name: sum(m.counts[name] for m in minutes) for name in activity.OUTCOMES}
        return found if found == {"delivered": 2, "retried": 1, "dead_lettered": 1,
                                  "throttled": 1} else None

    wait_until(totals, timeout=10, message="the per-minute figures of 4 events")
    minutes = last_hour(fleet.redis, keys, redis_millis(fleet.redis))
    assert any(m.latency_ms[50] is not None for m in minutes)
