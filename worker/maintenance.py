"""Maintenance windows at run time: stored in Redis, read by workers with a short cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import redis
from pydantic import ValidationError

from config.destinations import Destination
from config.keyspace import Keyspace
from config.maintenance import MaintenanceWindow, active_window

# One-off windows that ended this long ago are dropped from the store when read.
KEEP_ENDED = timedelta(days=7)


def add_window(client: redis.Redis, keys: Keyspace, window: MaintenanceWindow) -> None:
    """Store a run-time window (replacing one with the same id)."""
    client.hset(keys.maintenance, window.id, window.model_dump_json())


def remove_window(client: redis.Redis, keys: Keyspace, window_id: str) -> bool:
    """Delete a run-time window; False when no such window exists."""
    return bool(client.hdel(keys.maintenance, window_id))


def runtime_windows(client: redis.Redis, keys: Keyspace) -> list[MaintenanceWindow]:
    """Every stored run-time window that is still of use; unreadable entries are skipped."""
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
        windows.append(window)
    return windows


def all_windows(client: redis.Redis, keys: Keyspace,
                destinations: Iterable[Destination]) -> list[MaintenanceWindow]:
    """Configured windows, then run-time ones."""
    configured = [w for d in destinations for w in d.maintenance]
    return configured + runtime_windows(client, keys)


class MaintenanceView:
    """A worker process's view of the windows, re-read at most every `cache_seconds`."""

    def __init__(self, client: redis.Redis, keys: Keyspace,
                 destinations: Iterable[Destination], cache_seconds: float) -> None:
        self._client, self._keys, self._cache_seconds = client, keys, cache_seconds
        self._destinations = list(destinations)
        self._lock = threading.Lock()
        self._windows: list[MaintenanceWindow] = []
        self._read_at = float("-inf")

    def governing(self, destination: str, monitor_id: str,
                  now_ms: int) -> tuple[MaintenanceWindow, datetime] | None:
        """The window an event falls in now, and when it ends; None outside any window."""
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        return active_window(self._current(), destination, monitor_id, now)

    def has_windows(self, destination: str) -> bool:
        """Whether any window (past, present or future) names `destination`."""
        return any(window.destination == destination for window in self._current())

    def _current(self) -> list[MaintenanceWindow]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._cache_seconds:
                self._windows = all_windows(self._client, self._keys, self._destinations)
                self._read_at = time.monotonic()
            return self._windows
