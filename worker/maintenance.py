"""Maintenance windows at run time: stored in Redis, indexed by destination, read by
workers one destination at a time.

The windows live in one hash (id -> JSON) with an index beside it: the window ids of each
destination, and the destinations that have any. Every change is one script that keeps
the index, increments a version counter and appends the destinations it touched to a
capped change log. A worker's `MaintenanceView` reads the windows of the destination an
event belongs to, keeps them until the change log names that destination again, and reads
the counter at most every `cache_seconds`: with 100,000 destinations of one window each, a
lookup reads one destination's windows once, and an unchanged store costs one GET a second.

A slot held by a run-time `hold` window is recorded under the window's id, so that removing
or replacing the window wakes it at once instead of at the old window's end.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import redis
from pydantic import ValidationError

from config import defaults
from config.destinations import Destination
from config.idempotent import IdempotentScript
from config.keyspace import Keyspace
from config.maintenance import MaintenanceWindow, active_window
from worker.admission import NOW

# One-off windows that ended this long ago are dropped from the store when read.
KEEP_ENDED = timedelta(days=7)
# Change log entries read per call while a worker catches up.
CHANGES_PER_READ = 1000

# Lua: `destination_of(window JSON)`: the destination a stored window names, or nil; and
# `index_all(maintenance, destinations, index prefix)`: indexes every stored window, for a
# store written before the index existed.
INDEX_FN = """
local function destination_of(raw)
  local ok, window = pcall(cjson.decode, raw)
  if ok and type(window) == 'table' and type(window.destination) == 'string'
      and window.destination ~= '' then
    return window.destination
  end
  return nil
end
local function index_all(windows, destinations, prefix)
  local stored = redis.call('HGETALL', windows)
  for i = 1, #stored, 2 do
    local destination = destination_of(stored[i + 1])
    if destination then
      redis.call('SADD', prefix .. destination, stored[i])
      redis.call('SADD', destinations, destination)
    end
  end
end
"""

# KEYS: 1 maintenance, 2 the window's held set, 3 schedule, 4 destinations with windows,
#       5 version, 6 change log
# ARGV: 1 window id, 2 window JSON ('' to remove it), 3 its destination ('' to remove it),
#       4 index key prefix (`maintenance_of('')`), 5 change log length
# Stores or deletes the window and keeps the index (a replaced window may name another
# destination), then records the change: the version and, for each destination it
# touched, how many windows that destination has now. Every slot the window held is made
# due now (a slot due earlier, or gone from the schedule, is left alone). A worker whose
# cached view still has the old window finds it changed when it tries to hold a slot
# again (see WAIT), so nothing is held past the change for longer than that cache. The
# first change of a store written before the index existed indexes it first (once).
# Returns {stored or deleted, woken}.
CHANGE_WINDOW = NOW + INDEX_FN + """
local prefix = ARGV[4]
if redis.call('EXISTS', KEYS[5]) == 0 then index_all(KEYS[1], KEYS[4], prefix) end
local touched = {}
local previous = redis.call('HGET', KEYS[1], ARGV[1])
local previous_destination = previous and destination_of(previous)
if previous_destination then
  redis.call('SREM', prefix .. previous_destination, ARGV[1])
  touched[previous_destination] = true
end
local changed
if ARGV[2] == '' then
  changed = redis.call('HDEL', KEYS[1], ARGV[1])
else
  changed = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('SADD', prefix .. ARGV[3], ARGV[1])
  touched[ARGV[3]] = true
end
local woken = 0
for _, slot in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  woken = woken + redis.call('ZADD', KEYS[3], 'XX', 'LT', 'CH', now, slot)
end
redis.call('DEL', KEYS[2])
if previous or ARGV[2] ~= '' then
  local counts = {}
  for destination in pairs(touched) do
    counts[destination] = redis.call('SCARD', prefix .. destination)
    if counts[destination] == 0 then
      redis.call('SREM', KEYS[4], destination)
    else
      redis.call('SADD', KEYS[4], destination)
    end
  end
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[5], '*',
             'version', redis.call('INCR', KEYS[5]), 'destinations', cjson.encode(counts))
end
return {changed, woken}
"""

# KEYS: maintenance, destinations with windows, version, change log
# ARGV: index key prefix, change log length
# Indexes a store written before the index existed (one without a version), and records
# a change of every destination ('*'). Returns 1 when it did, 0 when the store had a
# version already.
INDEX_STORED = INDEX_FN + """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
index_all(KEYS[1], KEYS[2], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*',
           'version', redis.call('INCR', KEYS[3]), 'destinations', '*')
return 1
"""

# KEYS: the destination's index, maintenance
# Returns {id, window JSON, id, window JSON, ...} for the destination's windows.
WINDOWS_OF = """
local found = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local raw = redis.call('HGET', KEYS[2], id)
  if raw then
    found[#found + 1] = id
    found[#found + 1] = raw
  end
end
return found
"""


def _change_window(client: redis.Redis, keys: Keyspace, window_id: str, stored: str,
                   destination: str) -> tuple[int, int]:
    changed, woken = IdempotentScript(client, CHANGE_WINDOW, keys)(
        keys=_change_keys(keys, window_id),
        args=[window_id, stored, destination, keys.maintenance_of(""),
              defaults.MAINTENANCE_CHANGES_KEPT],
    )
    return int(changed), int(woken)


def _change_keys(keys: Keyspace, window_id: str) -> list[str]:
    return [keys.maintenance, keys.maintenance_held(window_id), keys.schedule,
            keys.maintenance_destinations, keys.maintenance_version, keys.maintenance_changes]


def add_window(client: redis.Redis, keys: Keyspace, window: MaintenanceWindow) -> int:
    """Store a run-time window, replacing one with the same id; returns how many slots the
    replaced window held, now woken to be looked at under the new one."""
    return _change_window(client, keys, window.id, window.model_dump_json(),
                          window.destination)[1]


def add_windows(client: redis.Redis, keys: Keyspace, windows: Iterable[MaintenanceWindow],
                *, per_round_trip: int = 1000) -> None:
    """Store many run-time windows, `per_round_trip` scripts per round trip (each one
    `add_window`, so each is atomic on its own)."""
    change = IdempotentScript(client, CHANGE_WINDOW, keys)
    pipe = client.pipeline(transaction=False)
    for count, window in enumerate(windows, start=1):
        change(keys=_change_keys(keys, window.id),
               args=[window.id, window.model_dump_json(), window.destination,
                     keys.maintenance_of(""), defaults.MAINTENANCE_CHANGES_KEPT], client=pipe)
        if count % per_round_trip == 0:
            pipe.execute()
    pipe.execute()


def remove_window(client: redis.Redis, keys: Keyspace, window_id: str) -> int | None:
    """Delete a run-time window and wake the slots it held; returns how many it held, or
    None when no such window exists."""
    removed, woken = _change_window(client, keys, window_id, "", "")
    return woken if removed else None


def held_keys(client: redis.Redis, keys: Keyspace, window_id: str) -> int:
    """How many keys a run-time `hold` window holds now (0 for any other window)."""
    return int(client.scard(keys.maintenance_held(window_id)))


def _still_of_use(client: redis.Redis, keys: Keyspace, window_id: str,
                  raw: str) -> MaintenanceWindow | None:
    """The stored window, or None when it is unreadable or ended long ago (then removed)."""
    try:
        window = MaintenanceWindow.model_validate_json(raw)
    except ValidationError:
        return None
    if window.end is not None and window.end < datetime.now(UTC) - KEEP_ENDED:
        remove_window(client, keys, window_id)
        return None
    return window


def stored_windows(client: redis.Redis, keys: Keyspace) -> list[tuple[MaintenanceWindow, str]]:
    """Every stored run-time window that is still of use, with its stored JSON; unreadable
    entries are skipped. Reads the whole store a part at a time (for `maintenance list`)."""
    windows = []
    for window_id, raw in client.hscan_iter(keys.maintenance, count=1000):
        window = _still_of_use(client, keys, window_id, raw)
        if window is not None:
            windows.append((window, raw))
    return windows


def destination_windows(client: redis.Redis, keys: Keyspace,
                        destination: str) -> list[tuple[MaintenanceWindow, str]]:
    """The stored run-time windows of one destination that are still of use, with their
    stored JSON: reads that destination's windows only."""
    found = client.register_script(WINDOWS_OF)(
        keys=[keys.maintenance_of(destination), keys.maintenance])
    windows = []
    for window_id, raw in zip(found[::2], found[1::2], strict=True):
        window = _still_of_use(client, keys, window_id, raw)
        if window is not None and window.destination == destination:
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


class _RuntimeWindows(NamedTuple):
    windows: list[MaintenanceWindow]
    stored: dict[str, str]  # window id -> the JSON it was read from


class MaintenanceView:
    """A worker process's view of the windows, by destination.

    Configured windows are indexed once. Of the run-time ones, the view knows which
    destinations have any (an O(1) `has_windows`), and reads a destination's windows when
    an event of it needs them, keeping those of the last `cached_destinations`
    destinations. Every `cache_seconds` it reads the store's version; when that moved, the
    change log since its own version says which destinations to forget (and whether they
    still have windows). A worker that lost the log's thread (the log is capped, the store
    was replaced) reads the set of destinations again. No lock is held while a
    destination's windows are read: threads wait for each other only to apply the change
    log.
    """

    def __init__(self, client: redis.Redis, keys: Keyspace,
                 destinations: Iterable[Destination], cache_seconds: float, *,
                 cached_destinations: int = defaults.MAINTENANCE_CACHED_DESTINATIONS) -> None:
        self._client, self._keys, self._cache_seconds = client, keys, cache_seconds
        self._configured: dict[str, list[MaintenanceWindow]] = {}
        for destination in destinations:
            for window in destination.maintenance:
                self._configured.setdefault(window.destination, []).append(window)
        self._cached_destinations = cached_destinations
        # destinations with run-time windows, and the store's version and change log entry
        # they reflect (None: not read yet)
        self._names: set[str] = set()
        self._version: int | None = None
        self._last_change = "0-0"
        self._checked_at = float("-inf")
        self._changes_lock = threading.Lock()
        # destination -> its run-time windows; `_generation` counts the forgettings, so a
        # read that a change overtook is not kept
        self._cache: OrderedDict[str, _RuntimeWindows] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._generation = 0

    def governing(self, destination: str, monitor_id: str, now_ms: int) -> Governing | None:
        """The window an event falls in now, and when it ends; None outside any window."""
        self._follow_changes()
        runtime = self._runtime(destination)
        windows = self._configured.get(destination, []) + runtime.windows
        if not windows:
            return None
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        found = active_window(windows, destination, monitor_id, now)
        if found is None:
            return None
        window, until = found
        return Governing(window, until,
                         runtime.stored.get(window.id) if window.origin == "runtime" else None)

    def has_windows(self, destination: str) -> bool:
        """Whether any window (past, present or future) names `destination`."""
        self._follow_changes()
        return destination in self._configured or destination in self._names

    # ---- one destination's run-time windows

    def _runtime(self, destination: str) -> _RuntimeWindows:
        if destination not in self._names:
            return _RuntimeWindows([], {})
        with self._cache_lock:
            cached = self._cache.get(destination)
            if cached is not None:
                self._cache.move_to_end(destination)
                return cached
            generation = self._generation
        read = destination_windows(self._client, self._keys, destination)
        found = _RuntimeWindows([window for window, _ in read],
                                {window.id: raw for window, raw in read})
        with self._cache_lock:
            if self._generation == generation:
                self._cache[destination] = found
                while len(self._cache) > self._cached_destinations:
                    self._cache.popitem(last=False)
        return found

    def _forget(self, destinations: Iterable[str] | None) -> None:
        """Drop cached windows: of these destinations, or of all (None)."""
        with self._cache_lock:
            self._generation += 1
            if destinations is None:
                self._cache.clear()
            else:
                for destination in destinations:
                    self._cache.pop(destination, None)

    # ---- following the store's changes

    def _follow_changes(self) -> None:
        if time.monotonic() - self._checked_at < self._cache_seconds:
            return
        checked_at = time.monotonic()
        version = self._client.get(self._keys.maintenance_version)
        if self._version is None or int(version or 0) != self._version:
            with self._changes_lock:
                self._catch_up()
        self._checked_at = checked_at

    def _catch_up(self) -> None:
        """Bring the view to the store's current version (under `_changes_lock`)."""
        version = self._client.get(self._keys.maintenance_version)
        if self._version is None or version is None or int(version) < self._version:
            self._read_all()
            return
        while self._version < int(version):
            entries = self._client.xrange(self._keys.maintenance_changes,
                                          min=f"({self._last_change}", count=CHANGES_PER_READ)
            if not entries:
                break
            for entry_id, fields in entries:
                if not self._apply(fields):
                    self._read_all()
                    return
                self._last_change = entry_id
        if self._version < int(version):  # the log lost entries this view needs
            self._read_all()

    def _apply(self, fields: dict[str, str]) -> bool:
        """Apply one change log entry; False when the view must be read again instead."""
        assert self._version is not None
        try:
            version, touched = int(fields["version"]), json.loads(fields["destinations"])
        except (KeyError, ValueError):
            return False
        if version <= self._version:
            return True
        if version > self._version + 1 or not isinstance(touched, dict):
            return False  # a gap in the log, or a change of every destination
        for destination, count in touched.items():
            if count:
                self._names.add(destination)
            else:
                self._names.discard(destination)
        self._forget(touched)
        self._version = version
        return True

    def _read_all(self) -> None:
        """Read which destinations have run-time windows, from scratch."""
        client, keys = self._client, self._keys
        if not client.exists(keys.maintenance_version):
            client.register_script(INDEX_STORED)(
                keys=[keys.maintenance, keys.maintenance_destinations,
                      keys.maintenance_version, keys.maintenance_changes],
                args=[keys.maintenance_of(""), defaults.MAINTENANCE_CHANGES_KEPT])
        pipe = client.pipeline(transaction=True)
        pipe.get(keys.maintenance_version)
        pipe.xrevrange(keys.maintenance_changes, count=1)
        version, last = pipe.execute()
        # changes from here on are in the log after `last`, and applying one twice is harmless
        names = set(client.sscan_iter(keys.maintenance_destinations, count=1000))
        self._forget(None)
        self._names = names
        self._version = int(version or 0)
        self._last_change = last[0][0] if last else "0-0"
