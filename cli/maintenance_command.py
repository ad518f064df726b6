"""`monitao-pd maintenance add|list|remove`: maintenance windows at run time."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click
from pydantic import ValidationError

from cli.formatting import table
from config.connections import redis_client
from config.destinations import Destination, load_destinations
from config.errors import ConfigurationError, NotFoundError
from config.keyspace import Keyspace
from config.lookup import DestinationLookup
from config.maintenance import MaintenanceWindow
from config.settings import Settings, describe_validation_error, load_settings
from worker.maintenance import add_window, all_windows, held_keys, remove_window


@click.group()
def maintenance() -> None:
    """Maintenance windows: suppress or hold a destination's (or some monitors') alerts."""


@maintenance.command("add")
@click.option("--destination", required=True, help="a configured destination")
@click.option("--monitor", "monitors", multiple=True, help="only these monitor ids")
@click.option("--start", help="one-off window start, ISO 8601 (UTC if no offset)")
@click.option("--end", help="one-off window end, ISO 8601")
@click.option("--weekly", help='recurring window, e.g. "sun 02:00-04:00" (UTC)')
@click.option("--mode", type=click.Choice(["suppress", "hold"]), default="suppress",
              show_default=True, help="suppress the alerts, or hold them until it ends")
@click.option("--reason", default="", help="shown in `maintenance list`")
@click.option("--id", "window_id", help="an id of your own (default: generated)")
def add(destination: str, monitors: tuple[str, ...], start: str | None, end: str | None,
        weekly: str | None, mode: str, reason: str, window_id: str | None) -> int:
    """Add a window; it takes effect on every worker within a second."""
    settings = load_settings()
    destinations = DestinationLookup(redis_client(settings), Keyspace(settings.key_prefix),
                                     file_destinations=_file(settings))
    if destination not in destinations:  # the file's or a run-time one
        raise ConfigurationError([f"--destination: unknown destination {destination!r} "
                                  f"(configured: {destinations.describe_names()})"])
    fields: dict[str, object] = {"destination": destination, "monitors": monitors,
                                 "start": start, "end": end, "weekly": weekly, "mode": mode,
                                 "reason": reason, "origin": "runtime"}
    if window_id:
        fields["id"] = window_id
    try:
        window = MaintenanceWindow.model_validate({k: v for k, v in fields.items()
                                                   if v is not None})
    except ValidationError as exc:
        raise ConfigurationError([f"--{line}" for line in describe_validation_error(exc)]) \
            from None
    woken = add_window(redis_client(settings), Keyspace(settings.key_prefix), window)
    click.echo(f"added window {window.id}: {destination}, {window.describe()}, {window.mode}"
               + (f" (replaced; {woken} held key(s) woken)" if woken else ""))
    return 0


@maintenance.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_windows(as_json: bool) -> int:
    """List configured and run-time windows, and whether each is active now."""
    settings = load_settings()
    destinations = _file(settings)
    client, keys = redis_client(settings), Keyspace(settings.key_prefix)
    windows = all_windows(client, keys, destinations.values())
    held = {w.id: held_keys(client, keys, w.id) for w in windows if w.origin == "runtime"}
    now = datetime.now(UTC)
    if as_json:
        rows = [dict(w.model_dump(mode="json"), active_until=(
            until.isoformat() if (until := w.active_until(now)) else None),
            holding=held.get(w.id)) for w in windows]
        click.echo(json.dumps(rows, indent=2))
        return 0
    if not windows:
        click.echo("no maintenance windows")
        return 0
    click.echo(table(
        [[w.id, w.destination, ",".join(w.monitors) or "all", w.describe(), w.mode,
          "yes" if w.active_until(now) else "no", w.origin,
          str(held[w.id]) if w.id in held else "-", w.reason] for w in windows],
        ["id", "destination", "monitors", "when", "mode", "active", "from", "holding",
         "reason"],
    ))
    return 0


@maintenance.command("remove")
@click.argument("window_id")
def remove(window_id: str) -> int:
    """Remove a run-time window (configured ones live in the destinations file)."""
    settings = load_settings()
    destinations = _file(settings)
    if any(w.id == window_id for d in destinations.values() for w in d.maintenance):
        raise ConfigurationError([f"window {window_id!r} is defined in the destinations file; "
                                  "remove it there"])
    woken = remove_window(redis_client(settings), Keyspace(settings.key_prefix), window_id)
    if woken is None:
        raise NotFoundError(f"no maintenance window {window_id!r}")
    click.echo(f"removed window {window_id}"
               + (f"; {woken} held key(s) woken" if woken else ""))
    return 0


def _file(settings: Settings) -> dict[str, Destination]:
    """The destinations file's destinations (none without MONITAO_PD_CONFIG)."""
    return load_destinations(settings.config, resolve_secrets=False) if settings.config else {}
