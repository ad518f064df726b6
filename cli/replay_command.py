"""`monitao-pd replay`: send dead letters again, in order, never resurrecting a stale trigger."""

from __future__ import annotations

import json

import click

from cli.formatting import replay_table
from cli.options import filter_options, make_filters, redis_errors
from config.connections import redis_client
from config.settings import load_settings
from worker.replay_request import replay_dead_letters


@click.command()
@click.argument("event_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="every dead letter")
@filter_options
@click.option("--dry-run", is_flag=True, help="list what would be sent and what skipped, why")
@click.option("--force", is_flag=True,
              help="replay even when a later event of the key was delivered (superseded) or "
                   "the key's history has expired")
@click.option("--json", "as_json", is_flag=True, help="print the decisions as a JSON list")
@redis_errors
def replay(event_ids: tuple[str, ...], everything: bool, destination: str | None,
           reason: str | None, since: int | None, until: int | None, dry_run: bool,
           force: bool, as_json: bool) -> int:
    """Replay dead letters by id (or unique prefix of 8+ characters), by filters, or --all.

    Each key's events go back in production order, ahead of its later pending events. A
    dead letter whose key had a later event delivered (e.g. a trigger whose resolve went
    through) is ended `superseded` instead, unless --force. A replay already pending is not
    queued twice. Replayed events leave the dead letters only once delivered.

    Exit status: 0 when every event was queued, superseded or already pending; 1 when some
    were refused (history expired, no longer dead letters, still in flight); 2 for an
    unknown id.
    """
    settings = load_settings()
    report = replay_dead_letters(
        redis_client(settings), settings, event_ids=event_ids,
        filters=make_filters(destination, reason, since, until), everything=everything,
        dry_run=dry_run, force=force)
    shown = [d.as_dict() for d in report.decisions]
    if as_json:
        click.echo(json.dumps(shown, indent=2))
    elif not shown:
        click.echo("no dead letters match")
    else:
        click.echo(replay_table(shown))
        click.echo("\n" + ("dry run: " if dry_run else "") + ", ".join(
            f"{n} {outcome.replace('_', ' ')}" for outcome, n in report.tally.items()))
    return 1 if report.refused else 0
