"""Maintenance windows at run time: stored in Redis, read by workers with a short cache.

A slot held by a run-time `hold` window is recorded under the window's id, so that removing
or replacing the window wakes it at once instead of at the old window's end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import redis
from pydantic import ValidationError

from config.destinations import Destination
from config.keyspace import Keyspace
from config.maintenance import MaintenanceWindow, active_window
from worker.admission import NOW

# One-off windows that ended this long ago are dropped from the store when read.
KEEP_ENDED = timedelta(days=7)


# KEYS: maintenance, the window's held set, schedule   ARGV: window id, window JSON ('' to
#       remove it)
# Stores or deletes the window and makes every slot it held due now (a slot due earlier, or
# gone from the schedule, is left alone). A worker whose cached view still has the old
# window finds it changed when it tries to hold a slot again (see WAIT), so nothing is held
# past the change for longer than that cache. Returns {stored or deleted, woken}.
CHANGE_WINDOW = NOW + """
local changed
if ARGV[2] == '' then
  changed = redis.call('HDEL', KEYS[1], ARGV[1])
else
  changed = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local woken = 0
for _, slot in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  woken = woken + redis.call('ZADD', KEYS[3], 'XX', 'LT', 'CH', now, slot)
end
redis.call('DEL', KEYS[2])
return {changed, woken}
"""


def _change_window(client: redis.Redis, keys: Keyspace, window_id: str,
                   stored: str) -> tuple[int, int]:
    changed, woken = client.eval(CHANGE_WINDOW, 3, keys.maintenance,  # type: ignore[misc]
                                 keys.maintenance_held(window_id), keys.schedule,
                                 window_id, stored)
    return int(changed), int(woken)


def add_window(client: redis.Redis, keys: Keyspace, window: MaintenanceWindow) -> int:
    """Store a run-time window, replacing one with the same id; returns how many slots the
    replaced window held, now woken to be looked at under the new one."""
    return _change_window(client, keys, window.id, window.model_dump_json())[1]


def remove_window(client: redis.Redis, keys: Keyspace, window_id: str) -> int | None:
    """Delete a run-time window and wake the slots it held; returns how many it held, or
    None when no such window exists."""
    removed, woken = _change_window(client, keys, window_id, "")
    return woken if removed else None


def held_keys(client: redis.Redis, keys: Keyspace, window_id: str) -> int:
    """How many keys a run-time `hold` window holds now (0 for any other window)."""
    return int(client.scard(keys.maintenance_held(window_id)))


def stored_windows(client: redis.Redis, keys: Keyspace) -> list[tuple[MaintenanceWindow, str]]:
    """Every stored run-time window that is still of use, with its stored JSON; unreadable
    entries are skipped."""
    now = datetime.now(UTC)
    windows = []
    for window_id, raw in client.hgetall(keys.maintenance).items():
        try:
            window = MaintenanceWindow.model_validate_json(raw)
        except ValidationError:
            continue
        if window.end is not None and window.end < now - KEEP_ENDED:
            client.hdel(keys.maintenance, window_id)
            continue
        windows.append((window, raw))
    return windows


def runtime_windows(client: redis.Redis, keys: Keyspace) -> list[MaintenanceWindow]:
    """Every stored run-time window that is still of use; unreadable entries are skipped."""
    return [window for window, _ in stored_windows(client, keys)]


def all_windows(client: redis.Redis, keys: Keyspace,
                destinations: Iterable[Destination]) -> list[MaintenanceWindow]:
    """Configured windows, then run-time ones."""
    configured = [w for d in destinations for w in d.maintenance]
    return configured + runtime_windows(client, keys)


class Governing(NamedTuple):
    """The window governing an event now."""

    window: MaintenanceWindow
    until: datetime
    # the JSON a run-time window was read from (None for a configured one): a worker about
    # to hold a slot checks that Redis still has exactly this window
    stored: str | None


class MaintenanceView:
    """A worker process's view of the windows, re-read at most every `cache_seconds`."""

    def __init__(self, client: redis.Redis, keys: Keyspace,
                 destinations: Iterable[Destination], cache_seconds: float) -> None:
        self._client, self._keys, self._cache_seconds = client, keys, cache_seconds
        self._destinations = list(destinations)
        self._lock = threading.Lock()
        self._windows: list[MaintenanceWindow] = []
        self._stored: dict[str, str] = {}
        self._read_at = float("-inf")

    def governing(self, destination: str, monitor_id: str, now_ms: int) -> Governing | None:
        """The window an event falls in now, and when it ends; None outside any window."""
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        windows, stored = self._current()
        found = active_window(windows, destination, monitor_id, now)
        if found is None:
            return None
        window, until = found
        return Governing(window, until,
                         stored.get(window.id) if window.origin == "runtime" else None)

    def has_windows(self, destination: str) -> bool:
        """Whether any window (past, present or future) names `destination`."""
        return any(window.destination == destination for window in self._current()[0])

    def _current(self) -> tuple[list[MaintenanceWindow], dict[str, str]]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._cache_seconds:
                runtime = stored_windows(self._client, self._keys)
                self._windows = [w for d in self._destinations for w in d.maintenance] + [
                    window for window, _ in runtime]
                self._stored = {window.id: raw for window, raw in runtime}
                self._read_at = time.monotonic()
            return self._windows, self._stored
