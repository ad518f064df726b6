"""`monitao-pd maintenance add|list|remove`: maintenance windows at run time."""

from __future__ import annotations

import json

import click

from cli.formatting import table
from config.connections import redis_client
from config.destinations import load_destinations
from config.errors import InvalidInputError
from config.keyspace import Keyspace
from config.lookup import DestinationLookup
from config.settings import Settings, load_settings
from worker import maintenance_windows


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
@click.option("--no-sync", is_flag=True,
              help="keep it on MoniTao's side only: not created on the PagerDuty service")
def add(destination: str, monitors: tuple[str, ...], start: str | None, end: str | None,
        weekly: str | None, mode: str, reason: str, window_id: str | None,
        no_sync: bool) -> int:
    """Add a window; it takes effect on every worker within a second.

    A window of the whole destination (no --monitor) whose destination has PagerDuty REST
    credentials is also created on its PagerDuty service, unless --no-sync.
    """
    settings = load_settings()
    destinations = _destinations(settings)
    fields = {"destination": destination, "monitors": monitors, "start": start, "end": end,
              "weekly": weekly, "mode": mode, "reason": reason, "id": window_id,
              "sync": not no_sync}
    try:
        window, woken = maintenance_windows.add(
            redis_client(settings), Keyspace(settings.key_prefix), destinations, fields)
    except InvalidInputError as exc:  # name the options, not the fields
        raise InvalidInputError([problem if problem.startswith("window:") else f"--{problem}"
                                 for problem in exc.problems]) from None
    click.echo(f"added window {window.id}: {destination}, {window.describe()}, {window.mode}"
               + (f" (replaced; {woken} held key(s) woken)" if woken else ""))
    return 0


@maintenance.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_windows(as_json: bool) -> int:
    """List configured and run-time windows, whether each is active now, and how each
    stands with PagerDuty (synced, pending, failed: why, not synced: why; - without REST
    credentials)."""
    settings = load_settings()
    rows = maintenance_windows.listing(redis_client(settings), Keyspace(settings.key_prefix),
                                       _destinations(settings))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    if not rows:
        click.echo("no maintenance windows")
        return 0
    click.echo(table(
        [[w["id"], w["destination"], ",".join(w["monitors"]) or "all", w["when"], w["mode"],
          "yes" if w["active_until"] else "no", w["origin"],
          "-" if w["holding"] is None else str(w["holding"]), _sync(w), w["reason"]]
         for w in rows],
        ["id", "destination", "monitors", "when", "mode", "active", "from", "holding",
         "pagerduty", "reason"],
    ))
    return 0


@maintenance.command("remove")
@click.argument("window_id")
def remove(window_id: str) -> int:
    """Remove a run-time window (configured ones live in the destinations file)."""
    settings = load_settings()
    woken = maintenance_windows.remove(
        redis_client(settings), Keyspace(settings.key_prefix), _destinations(settings),
        window_id)
    click.echo(f"removed window {window_id}"
               + (f"; {woken} held key(s) woken" if woken else ""))
    return 0


def _sync(window: dict[str, object]) -> str:
    """The PagerDuty column: the sync state, and the PagerDuty window when there is one."""
    state, pd_id = window.get("sync"), window.get("pagerduty_window_id")
    if state is None:
        return "-"
    return f"{state} ({pd_id})" if pd_id and state == "synced" else str(state)


def _destinations(settings: Settings) -> DestinationLookup:
    """The destinations file's (none without MONITAO_PD_CONFIG) and the registry's."""
    file = load_destinations(settings.config, resolve_secrets=False) if settings.config else {}
    return DestinationLookup(redis_client(settings), Keyspace(settings.key_prefix),
                             file_destinations=file, validate=False)
