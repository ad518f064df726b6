"""The maintenance sync's policy (pure) and its state and lock in Redis."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
import redis

from config.destinations import parse_destinations
from config.keyspace import Keyspace
from config.locks import RedisLock
from config.maintenance import MaintenanceWindow
from worker.maintenance_sync_state import (
    SyncState,
    backoff_ms,
    credentials_digest,
    drop_state,
    next_due_ms,
    not_synced,
    read_states,
    sync_column,
    sync_summary,
    target_of,
    write_state,
)

MONDAY = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # a Monday


def destination(**rest: object):
    fields = {"routing_key": "R" * 32, **rest}
    return parse_destinations({"destinations": {"prod": fields}}, environ={})["prod"]


WITH_REST = dict(pagerduty_service_id="PSIMSVC", pagerduty_api_token="token-one-1234",
                 pagerduty_api_url="https://127.0.0.1:9")


@pytest.mark.parametrize(("weekly", "now", "start", "end"), [
    # next occurrence, days ahead
    ("sun 02:00-04:00", MONDAY, datetime(2026, 12, 6, 2, tzinfo=UTC),
     datetime(2026, 12, 6, 4, tzinfo=UTC)),
    # the current occurrence while active
    ("mon 11:00-13:00", MONDAY, datetime(2026, 11, 30, 11, tzinfo=UTC),
     datetime(2026, 11, 30, 13, tzinfo=UTC)),
    # just ended: the following one, a week later
    ("mon 10:00-12:00", MONDAY, datetime(2026, 12, 7, 10, tzinfo=UTC),
     datetime(2026, 12, 7, 12, tzinfo=UTC)),
    # crossing midnight, begun yesterday
    ("sun 23:00-13:00", MONDAY, datetime(2026, 11, 29, 23, tzinfo=UTC),
     datetime(2026, 11, 30, 13, tzinfo=UTC)),
    # later today
    ("mon 20:00-21:00", MONDAY, datetime(2026, 11, 30, 20, tzinfo=UTC),
     datetime(2026, 11, 30, 21, tzinfo=UTC)),
])
def test_a_weekly_window_targets_its_current_or_next_occurrence(
        weekly: str, now: datetime, start: datetime, end: datetime) -> None:
    window = MaintenanceWindow(id="w", destination="prod", weekly=weekly, reason="patching")
    target = target_of(window, now)
    assert target is not None
    assert (target.start, target.end) == (start, end)
    assert target.description == "MoniTao maintenance: patching [monitao:w]"


def test_a_one_off_window_targets_its_span_until_it_is_over() -> None:
    window = MaintenanceWindow(id="w", destination="prod", start=MONDAY,
                               end=MONDAY + timedelta(hours=1))
    target = target_of(window, MONDAY - timedelta(days=1))
    assert target is not None and (target.start, target.end) == (window.start, window.end)
    assert "[monitao:w]" in target.description and "to" in target.description
    assert target_of(window, MONDAY + timedelta(minutes=30)) is not None
    assert target_of(window, MONDAY + timedelta(hours=1)) is None
    changed = window.model_copy(update={"reason": "other"})
    assert target_of(changed, MONDAY).fingerprint != target_of(window, MONDAY).fingerprint


def test_description_escapes_control_characters() -> None:
    window = MaintenanceWindow(id="w", destination="prod", weekly="sun 02:00-04:00",
                               reason="a\nb\x1b[31m")
    assert "\n" not in target_of(window, MONDAY).description
    assert "\x1b" not in target_of(window, MONDAY).description


def test_which_windows_are_synchronised() -> None:
    rest, plain = destination(**WITH_REST), destination()
    whole = MaintenanceWindow(id="w", destination="prod", weekly="sun 02:00-04:00")
    assert not_synced(whole, rest) is None
    assert not_synced(whole, plain) is not None
    assert not_synced(whole, None) is not None
    assert not_synced(whole.model_copy(update={"monitors": ("1",)}), rest) == \
        "covers only some monitors"
    assert not_synced(whole.model_copy(update={"sync": False}), rest) == "sync = false"


def test_sync_column() -> None:
    rest = destination(**WITH_REST)
    window = MaintenanceWindow(id="w", destination="prod", start=MONDAY,
                               end=MONDAY + timedelta(hours=1))
    target = target_of(window, MONDAY)
    assert sync_column(window, destination(), None, MONDAY) == (None, None)
    assert sync_column(window, rest, None, MONDAY) == ("pending", None)
    assert sync_column(window, rest, None, MONDAY + timedelta(hours=2)) == (
        "not synced: already over", None)
    synced = SyncState("w", "prod", pd_id="PW1", fingerprint=target.fingerprint,
                       status="synced")
    assert sync_column(window, rest, synced, MONDAY) == ("synced", "PW1")
    moved = window.model_copy(update={"end": MONDAY + timedelta(hours=3)})
    assert sync_column(moved, rest, synced, MONDAY) == ("pending", "PW1")
    failed = SyncState("w", "prod", status="failed", reason="POST: HTTP 401")
    assert sync_column(window, rest, failed, MONDAY) == ("failed: POST: HTTP 401", None)
    scoped = window.model_copy(update={"monitors": ("1",)})
    assert sync_column(scoped, rest, None, MONDAY) == (
        "not synced: covers only some monitors", None)


def test_backoff_doubles_to_the_cap_and_a_permanent_failure_waits_the_cap() -> None:
    pauses = [backoff_ms(n, True, base_seconds=5, cap_seconds=600) for n in range(1, 10)]
    assert pauses[:4] == [5000, 10000, 20000, 40000]
    assert pauses[-1] == 600_000
    assert backoff_ms(1, False, base_seconds=5, cap_seconds=600) == 600_000


def test_credentials_digest_follows_the_token_and_service() -> None:
    one = credentials_digest(destination(**WITH_REST))
    assert one == credentials_digest(destination(**WITH_REST))
    assert one != credentials_digest(destination(**{**WITH_REST,
                                                    "pagerduty_api_token": "token-two-1234"}))
    assert one != credentials_digest(destination(**{**WITH_REST,
                                                    "pagerduty_service_id": "POTHER1"}))
    assert "token-one-1234" not in one


def test_states_round_trip_and_are_indexed(redis_conn: redis.Redis, prefix: str) -> None:
    keys = Keyspace(prefix)
    synced = SyncState("a", "prod", service_id="PSIMSVC", pd_id="PW1", status="synced",
                       start_ms=1, end_ms=2)
    failed = SyncState("b", "prod", status="failed", reason="HTTP 401", attempts=3,
                       next_at_ms=1234)
    write_state(redis_conn, keys, synced)
    write_state(redis_conn, keys, failed)
    assert read_states(redis_conn, keys) == {"a": synced, "b": failed}
    assert read_states(redis_conn, keys, ["b", "zz"]) == {"b": failed}
    assert next_due_ms(redis_conn, keys) == 1234
    assert redis_conn.zscore(keys.maintenance_sync_due, "a") == math.inf
    assert sync_summary(redis_conn, keys) == {
        "synced": 1, "pending": 0, "failed": 1, "first_failure": "window b (prod): HTTP 401"}
    drop_state(redis_conn, keys, "b")
    assert set(read_states(redis_conn, keys)) == {"a"}
    assert next_due_ms(redis_conn, keys) == math.inf


def test_a_failure_backs_off_and_counts(redis_conn: redis.Redis, prefix: str) -> None:
    state = SyncState("a", "prod")
    once = state.with_failure("HTTP 500\nx", True, 1000, base_seconds=1, cap_seconds=8)
    twice = once.with_failure("HTTP 500", True, 1000, base_seconds=1, cap_seconds=8)
    assert (once.status, once.attempts, once.next_at_ms, once.reason) == (
        "pending", 1, 2000, "HTTP 500\\nx")
    assert (twice.attempts, twice.next_at_ms) == (2, 3000)
    final = twice.with_failure("HTTP 401", False, 1000, base_seconds=1, cap_seconds=8)
    assert (final.status, final.next_at_ms, final.shown()) == ("failed", 9000,
                                                               "failed: HTTP 401")


def test_the_lock_is_held_by_one_owner_and_released_only_by_it(
        redis_conn: redis.Redis, prefix: str) -> None:
    key = Keyspace(prefix).maintenance_sync_lock
    one, two = RedisLock(redis_conn, key, 5), RedisLock(redis_conn, key, 5)
    assert one.acquire()
    assert not two.acquire()
    assert not two.release() and not two.renew()
    assert redis_conn.exists(key)
    assert one.renew()
    assert one.release()
    assert two.acquire()
    redis_conn.delete(key)  # expired, say: the old owner must not take the next one's
    assert one.acquire()
    assert not two.release()
    assert one.release()


def test_a_file_window_may_stay_off_pagerduty() -> None:
    found = parse_destinations({"destinations": {"prod": {
        "routing_key": "R" * 32, **WITH_REST,
        "maintenance": [{"weekly": "sun 02:00-04:00", "sync": False},
                        {"weekly": "sat 02:00-04:00"}]}}}, environ={})["prod"]
    off, on = found.maintenance
    assert (off.sync, on.sync) == (False, True)
    assert not_synced(off, found) == "sync = false" and not_synced(on, found) is None
