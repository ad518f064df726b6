"""Maintenance windows as operators manage them, from any door: add one (checked against
the destinations), list every window with its state now, remove a run-time one.

`monitao-pd maintenance` and the HTTP API's `/v1/maintenance-windows` both call these and
only render what they return. The windows themselves, and how workers see them, are in
`config/maintenance.py` and `worker/maintenance.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import ValidationError

from config.errors import ConflictError, InvalidInputError, NotFoundError
from config.keyspace import Keyspace
from config.lookup import DestinationLookup
from config.maintenance import MaintenanceWindow
from config.settings import describe_validation_error
from worker.maintenance import add_window, all_windows, held_keys, remove_window
from worker.maintenance_sync_state import SyncState, fleet_id, read_states, sync_column


def add(client: redis.Redis, keys: Keyspace, destinations: DestinationLookup,
        fields: Mapping[str, Any]) -> tuple[MaintenanceWindow, int]:
    """Validate and store a run-time window (replacing one with its id) of a destination of
    the file or the registry; return it and how many keys the replaced window held (now
    woken). Raises `InvalidInputError` naming each field, `ConflictError` for the id of a
    window of the destinations file."""
    name = fields.get("destination")
    if not isinstance(name, str) or name not in destinations:
        raise InvalidInputError([f"destination: unknown destination {name!r} "
                                 f"(configured: {destinations.describe_names()})"])
    try:
        window = MaintenanceWindow.model_validate(
            {**{k: v for k, v in fields.items() if v is not None}, "origin": "runtime"})
    except ValidationError as exc:
        raise InvalidInputError([
            "window" + line.removeprefix("settings") if line.startswith("settings:") else line
            for line in describe_validation_error(exc)]) from None
    _refuse_configured(destinations, window.id)
    return window, add_window(client, keys, window)


def listing(client: redis.Redis, keys: Keyspace, destinations: DestinationLookup,
            now: datetime | None = None) -> list[dict[str, Any]]:
    """Every window, configured then run-time, JSON-ready, with `active_until` (when it
    ends if active now, else None), `holding` (keys a run-time window holds; None for a
    configured one), and how it stands with PagerDuty (`sync`, `pagerduty_window_id`)."""
    now = now or datetime.now(UTC)
    windows = all_windows(client, keys, (d for _, d in destinations.file_items()))
    states = read_states(client, keys, [w.id for w in windows])
    return [row(client, keys, window, now, destinations=destinations,
                state=states.get(window.id)) for window in windows]


def row(client: redis.Redis, keys: Keyspace, window: MaintenanceWindow,
        now: datetime | None = None, *, destinations: DestinationLookup | None = None,
        state: SyncState | None = None) -> dict[str, Any]:
    """One window as `listing` shows it, with `sync` (`synced`, `pending`, `failed: why`,
    `not synced: why`, or None when its destination has no PagerDuty REST credentials) and
    `pagerduty_window_id` (worker/maintenance_sync_state.py). `state`: the window's sync
    state when already read (else it is read here)."""
    now = now or datetime.now(UTC)
    until = window.active_until(now)
    if state is None:
        state = read_states(client, keys, [window.id]).get(window.id)
    destination = destinations.get(window.destination) if destinations is not None else None
    sync, pd_id = sync_column(window, destination, state, now, fleet_id(keys))
    return dict(window.model_dump(mode="json"), when=window.describe(),
                active_until=until.isoformat() if until else None,
                holding=held_keys(client, keys, window.id) if window.origin == "runtime"
                else None, sync=sync, pagerduty_window_id=pd_id)


def remove(client: redis.Redis, keys: Keyspace, destinations: DestinationLookup,
           window_id: str) -> int:
    """Remove a run-time window; return how many keys it held (now woken). Raises
    `ConflictError` for a window of the destinations file, `NotFoundError` for no window."""
    _refuse_configured(destinations, window_id)
    woken = remove_window(client, keys, window_id)
    if woken is None:
        raise NotFoundError(f"no maintenance window {window_id!r}")
    return woken


def _refuse_configured(destinations: DestinationLookup, window_id: str) -> None:
    if any(w.id == window_id for _, d in destinations.file_items() for w in d.maintenance):
        raise ConflictError(f"window {window_id!r} is defined in the destinations file; "
                            "change it there")
