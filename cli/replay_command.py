"""`monitao-pd replay`: send dead letters again, in order, never resurrecting a stale trigger."""

from __future__ import annotations

import json

import click

from cli.formatting import replay_table
from cli.options import filter_options, make_filters, redis_errors
from config.connections import redis_client
from config.keyspace import Keyspace
from config.settings import load_settings
from worker import replay as replay_store
from worker.dead_letters import Filters

# Skips that are the replay working as intended, not a refusal.
EXPECTED_SKIPS = ("already_pending",)


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
    """Replay dead letters by id, by filters, or --all.

    Each key's events go back in production order, ahead of its later pending events. A
    dead letter whose key had a later event delivered (e.g. a trigger whose resolve went
    through) is ended `superseded` instead, unless --force. A replay already pending is not
    queued twice. Replayed events leave the dead letters only once delivered.

    Exit status: 0 when every event was queued, superseded or already pending; 1 when some
    were refused (history expired, no longer dead letters, still in flight); 2 for an
    unknown id.
    """
    filters = make_filters(destination, reason, since, until)
    if not event_ids and not everything and filters == Filters():
        raise click.UsageError("name event ids, give filters, or --all")
    if event_ids and (everything or filters != Filters()):
        raise click.UsageError("give event ids or filters/--all, not both")
    settings = load_settings()
    client = redis_client(settings)
    keys = Keyspace(settings.key_prefix)
    ids = list(event_ids) if event_ids else replay_store.select(client, keys, filters)
    missing = [event_id for event_id in dict.fromkeys(ids)
               if not client.exists(keys.event(event_id))]
    replay_store.require_known([replay_store.Decision(m, "unknown") for m in missing])

    decisions = replay_store.Replayer(client, settings, force=force,
                                      dry_run=dry_run).replay(ids)
    shown = [d.as_dict() for d in decisions]
    if as_json:
        click.echo(json.dumps(shown, indent=2))
    elif not shown:
        click.echo("no dead letters match")
    else:
        click.echo(replay_table(shown))
        tally: dict[str, int] = {}
        for d in decisions:
            tally[d.outcome] = tally.get(d.outcome, 0) + 1
        click.echo("\n" + ("dry run: " if dry_run else "") + ", ".join(
            f"{n} {outcome.replace('_', ' ')}" for outcome, n in sorted(tally.items())))
    refused = [d for d in decisions
               if d.outcome == "skipped" and d.reason not in EXPECTED_SKIPS]
    return 1 if refused else 0
