"""`monitao-pd timeline` and `monitao-pd dlq`: what happened to each event."""

from __future__ import annotations

import json

import click

from cli.formatting import table, timeline_table
from config.connections import redis_client
from config.errors import NotFoundError
from config.keyspace import Keyspace
from config.settings import load_settings
from worker import dead_letters
from worker import timeline as timeline_store


@click.command()
@click.argument("incident_id")
@click.option("--json", "as_json", is_flag=True, help="print the entries as a JSON list")
def timeline(incident_id: str, as_json: bool) -> int:
    """Show the delivery timeline of one MoniTao incident."""
    settings = load_settings()
    client = redis_client(settings)
    entries = list(timeline_store.read(client, Keyspace(settings.key_prefix), incident_id))
    if not entries:
        raise NotFoundError(f"no timeline for incident {incident_id!r}")
    click.echo(json.dumps(entries, indent=2) if as_json else timeline_table(entries))
    return 0


@click.group()
def dlq() -> None:
    """Dead-lettered deliveries."""


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True, help="print the entries as a JSON list")
def dlq_list(as_json: bool) -> int:
    """List dead letters, oldest first."""
    settings = load_settings()
    client = redis_client(settings)
    entries = list(dead_letters.iter_dead_letters(client, Keyspace(settings.key_prefix)))
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return 0
    if not entries:
        click.echo("no dead letters")
        return 0
    rows = [
        [e["dead_lettered_at"] or "", e["event_id"][:12], e["destination"], e["action"] or "",
         e["reason"], str(e["attempts"]), "; ".join(e["errors"]) or (e["error"] or "")]
        for e in entries
    ]
    click.echo(table(rows, ["dead-lettered", "event", "destination", "action", "reason",
                            "attempts", "error"]))
    return 0
