"""A worker's view of the run-time maintenance windows, indexed by destination: a lookup
reads only its destination's windows, a change only the destinations it touched, and no
lock is held while one destination's windows are read. Real Redis; the client only
records (and, in one test, delays) the commands it sends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from config.keyspace import Keyspace
from config.maintenance import MaintenanceWindow
from worker.maintenance import MaintenanceView, add_window, add_windows, remove_window

OTHERS = 1_000


class RecordingRedis(redis.Redis):
    """A real client that records each command it sends, and can hold up one thread's
    commands (but its GETs) until released."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[tuple[Any, ...]] = []
        self.prefix = ""  # of the keys `keys_touched` reports
        self.held_thread: int | None = None
        self.holding = threading.Event()
        self.release = threading.Event()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if threading.get_ident() == self.held_thread and args[0] != "GET":
            self.holding.set()
            self.release.wait(10)
        self.commands.append(args)
        return super().execute_command(*args, **options)

    def names(self) -> list[str]:
        return [str(command[0]).upper() for command in self.commands]

    def keys_touched(self) -> set[str]:
        return {a for command in self.commands for a in command[1:]
                if isinstance(a, str) and a.startswith(self.prefix)}


@pytest.fixture
def recording(redis_url: str, prefix: str) -> Iterator[RecordingRedis]:
    client = RecordingRedis.from_url(redis_url, decode_responses=True)
    client.prefix = prefix
    yield client
    client.close()


def window(window_id: str, destination: str, monitor: str = "1",
           mode: str = "suppress") -> MaintenanceWindow:
    now = datetime.now(UTC)
    return MaintenanceWindow(id=window_id, destination=destination, monitors=(monitor,),
                             start=now - timedelta(hours=1), end=now + timedelta(hours=1),
                             mode=mode)


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def stored(redis_conn: redis.Redis, prefix: str) -> Keyspace:
    """1,000 destinations with one window each, and prod with two."""
    keys = Keyspace(prefix)
    for n in range(OTHERS):
        add_window(redis_conn, keys, window(f"w{n}", f"d{n}"))
    add_window(redis_conn, keys, window("prod-a", "prod", monitor="1"))
    add_window(redis_conn, keys, window("prod-b", "prod", monitor="2", mode="hold"))
    return keys


def test_a_lookup_reads_only_its_destinations_windows(
    recording: RecordingRedis, stored: Keyspace
) -> None:
    keys = stored
    view = MaintenanceView(recording, keys, [], cache_seconds=60)

    found = view.governing("prod", "1", now_ms())
    assert found is not None and found.window.id == "prod-a"
    # which destinations have windows (names, not windows), then prod's windows alone
    assert "HGETALL" not in recording.names() and "HSCAN" not in recording.names()
    assert not {f"{keys.maintenance_of(f'd{n}')}" for n in range(OTHERS)} & (
        recording.keys_touched())
    assert keys.maintenance_of("prod") in recording.keys_touched()

    # within the cache period nothing more is read: not for prod, not to know who has any
    recording.commands.clear()
    assert view.governing("prod", "2", now_ms()).window.id == "prod-b"
    assert view.governing("prod", "3", now_ms()) is None
    assert view.has_windows("d7") and view.has_windows("prod")
    assert not view.has_windows("nowhere")
    assert view.governing("nowhere", "1", now_ms()) is None
    assert recording.commands == []


def test_a_change_re_reads_only_the_destinations_it_touched(
    recording: RecordingRedis, redis_conn: redis.Redis, stored: Keyspace
) -> None:
    keys = stored
    view = MaintenanceView(recording, keys, [], cache_seconds=0)
    assert view.governing("d1", "1", now_ms()) is not None
    assert view.governing("d2", "2", now_ms()) is None

    add_window(redis_conn, keys, window("w2b", "d2", monitor="2"))
    remove_window(redis_conn, keys, "w3")
    recording.commands.clear()
    assert view.governing("d2", "2", now_ms()).window.id == "w2b"
    assert view.governing("d1", "1", now_ms()).window.id == "w1"
    assert not view.has_windows("d3")
    touched = recording.keys_touched()
    assert keys.maintenance_of("d2") in touched  # read again: it changed
    assert keys.maintenance_of("d1") not in touched  # still as it was read
    assert "HGETALL" not in recording.names() and "SSCAN" not in recording.names()


def test_no_lock_is_held_while_one_destinations_windows_are_read(
    recording: RecordingRedis, stored: Keyspace
) -> None:
    view = MaintenanceView(recording, stored, [], cache_seconds=0)
    assert view.has_windows("prod")  # the view knows who has windows
    answers: list[object] = []

    def slow_lookup() -> None:
        recording.held_thread = threading.get_ident()
        answers.append(view.governing("prod", "1", now_ms()))

    slow = threading.Thread(target=slow_lookup)
    slow.start()
    try:
        assert recording.holding.wait(5), "the slow lookup never read Redis"
        # prod's read is under way and stuck: another destination's lookup still answers
        started = time.monotonic()
        assert view.governing("d5", "1", now_ms()).window.id == "w5"
        assert time.monotonic() - started < 2
        assert answers == []
    finally:
        recording.release.set()
        slow.join(10)
    assert answers[0].window.id == "prod-a"


def test_a_view_that_lost_the_change_log_reads_the_destinations_again(
    redis_conn: redis.Redis, stored: Keyspace
) -> None:
    keys = stored
    view = MaintenanceView(redis_conn, keys, [], cache_seconds=0)
    assert not view.has_windows("late")
    add_window(redis_conn, keys, window("late-1", "late"))
    redis_conn.xtrim(keys.maintenance_changes, maxlen=0)  # as if capped long ago
    add_window(redis_conn, keys, window("later-1", "later"))
    assert view.has_windows("late") and view.has_windows("later")
    assert view.governing("late", "1", now_ms()).window.id == "late-1"


def test_windows_stored_before_the_index_existed_are_found(
    redis_conn: redis.Redis, prefix: str
) -> None:
    keys = Keyspace(prefix)
    redis_conn.hset(keys.maintenance, "old", window("old", "prod").model_dump_json())
    # a window added by this version first indexes the ones stored before
    redis_conn.hset(keys.maintenance, "older", window("older", "other").model_dump_json())
    add_window(redis_conn, keys, window("new", "third"))
    view = MaintenanceView(redis_conn, keys, [], cache_seconds=0)
    assert view.governing("other", "1", now_ms()).window.id == "older"
    assert view.governing("third", "1", now_ms()).window.id == "new"
    remove_window(redis_conn, keys, "older")
    assert not view.has_windows("other")


def test_a_store_with_only_windows_from_before_the_index_is_indexed_by_a_worker(
    redis_conn: redis.Redis, prefix: str
) -> None:
    keys = Keyspace(prefix)
    redis_conn.hset(keys.maintenance, "old", window("old", "prod").model_dump_json())
    view = MaintenanceView(redis_conn, keys, [], cache_seconds=0)
    assert view.has_windows("prod")
    assert view.governing("prod", "1", now_ms()).window.id == "old"


def test_windows_stored_in_bulk_are_indexed_like_single_ones(
    redis_conn: redis.Redis, prefix: str
) -> None:
    keys = Keyspace(prefix)
    add_windows(redis_conn, keys, [window(f"bulk{n}", f"b{n % 3}") for n in range(7)],
                per_round_trip=2)
    assert redis_conn.smembers(keys.maintenance_of("b1")) == {"bulk1", "bulk4"}
    view = MaintenanceView(redis_conn, keys, [], cache_seconds=0)
    assert view.governing("b2", "1", now_ms()).window.id in {"bulk2", "bulk5"}
    assert remove_window(redis_conn, keys, "bulk0") == 0
    assert redis_conn.smembers(keys.maintenance_of("b0")) == {"bulk3", "bulk6"}
