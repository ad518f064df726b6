"""`monitao-pd timeline` and `monitao-pd dlq`: what happened to each event, and cleaning up."""

from __future__ import annotations

import json

import click

from cli.formatting import (
    dead_letter_detail,
    dead_letter_table,
    reason_counts,
    timeline_summary,
    timeline_table,
)
from cli.options import configured_destinations, filter_options, make_filters, redis_errors
from config.connections import redis_client
from config.errors import ConfigurationError
from config.keyspace import Keyspace
from config.lookup import DestinationLookup
from config.settings import load_settings
from worker import dead_letters
from worker import timeline as timeline_store
from worker.replay import operator_name


@click.command()
@click.argument("incident_id")
@click.option("--json", "as_json", is_flag=True, help="print the entries as a JSON list")
@click.option("--summary", is_flag=True,
              help="print only the derived figures (with --json: as a JSON object)")
@redis_errors
def timeline(incident_id: str, as_json: bool, summary: bool) -> int:
    """Show the delivery timeline of one MoniTao incident, and its derived figures.

    Every stage of every event: enqueued, each attempt (try, HTTP status, latency, worker,
    Celery task id), rate_limited, retry_scheduled, delivered, dead_lettered, replayed,
    superseded, purged. Entries older than the timeline retention are not shown.
    """
    settings = load_settings()
    client = redis_client(settings)
    entries = timeline_store.incident_entries(
        client, Keyspace(settings.key_prefix), incident_id,
        retention_seconds=settings.timeline_retention_seconds)
    figures = timeline_store.summarize(incident_id, entries)
    if summary:
        click.echo(json.dumps(figures, indent=2) if as_json else timeline_summary(figures))
    elif as_json:
        click.echo(json.dumps(entries, indent=2))
    else:
        click.echo(timeline_table(entries))
        click.echo()
        click.echo(timeline_summary(figures))
    return 0


@click.group()
def dlq() -> None:
    """Dead-lettered deliveries: list, show, count, purge (replay: `monitao-pd replay`)."""


@dlq.command("list")
@filter_options
@click.option("--json", "as_json", is_flag=True, help="print the entries as a JSON list")
@redis_errors
def dlq_list(destination: str | None, reason: str | None, since: int | None,
             until: int | None, as_json: bool) -> int:
    """List dead letters, oldest first, with counts by reason."""
    filters = make_filters(destination, reason, since, until)
    settings = load_settings()
    client = redis_client(settings)
    entries = list(dead_letters.iter_dead_letters(client, Keyspace(settings.key_prefix),
                                                  filters))
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return 0
    if not entries:
        click.echo("no dead letters" + (" match" if filters != dead_letters.Filters() else ""))
        return 0
    click.echo(dead_letter_table(entries))
    click.echo(f"\n{len(entries)} dead letter(s): {reason_counts(dead_letters.tally(entries))}")
    return 0


@dlq.command("counts")
@filter_options
@click.option("--json", "as_json", is_flag=True, help="print a JSON object reason -> count")
@redis_errors
def dlq_counts(destination: str | None, reason: str | None, since: int | None,
               until: int | None, as_json: bool) -> int:
    """Count dead letters by reason (replays on their way not counted)."""
    filters = make_filters(destination, reason, since, until)
    settings = load_settings()
    counts = dead_letters.counts_by_reason(redis_client(settings),
                                           Keyspace(settings.key_prefix), filters)
    if as_json:
        click.echo(json.dumps(counts, indent=2))
    else:
        click.echo(f"{sum(counts.values())} dead letter(s): {reason_counts(counts)}")
    return 0


@dlq.command("show")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object")
@redis_errors
def dlq_show(event_id: str, as_json: bool) -> int:
    """Show one dead letter: the event, the body sent (routing key masked), every attempt.

    EVENT_ID may be any unique prefix of at least 8 characters (tables show 12).
    """
    settings = load_settings()
    client = redis_client(settings)
    try:
        file = configured_destinations(settings) or {}
    except ConfigurationError:
        file = {}  # only run-time destinations' bodies can be rebuilt; the rest is shown
    # the file's and the registry's (no key ring: the body is rebuilt with the key masked)
    destinations = DestinationLookup(client, Keyspace(settings.key_prefix),
                                     file_destinations=file)
    letter = dead_letters.show(client, Keyspace(settings.key_prefix), event_id, destinations,
                               retention_seconds=settings.timeline_retention_seconds)
    click.echo(json.dumps(letter, indent=2) if as_json else dead_letter_detail(letter))
    return 0


@dlq.command("purge")
@click.argument("event_ids", nargs=-1)
@filter_options
@click.option("--all", "everything", is_flag=True, help="every dead letter (no filter)")
@click.option("--yes", is_flag=True, help="confirm: without it nothing is purged")
@click.option("--json", "as_json", is_flag=True, help="print event id -> outcome as JSON")
@redis_errors
def dlq_purge(event_ids: tuple[str, ...], destination: str | None, reason: str | None,
              since: int | None, until: int | None, everything: bool, yes: bool,
              as_json: bool) -> int:
    """Purge dead letters by id (or unique prefix) or by filters (or --all); needs --yes.

    A purged event leaves the dead letters for good (it cannot be replayed); its record is
    kept, state `purged`, for the event retention, and its timeline gets a `purged` entry.
    Replays on their way are left alone.
    """
    settings = load_settings()
    client = redis_client(settings)
    keys = Keyspace(settings.key_prefix)
    letters = dead_letters.purge_candidates(
        client, keys, event_ids=event_ids, filters=make_filters(destination, reason, since, until),
        everything=everything)
    if not letters:
        # Nothing to confirm: not a usage error, whatever --yes says.
        click.echo("{}" if as_json else "no dead letters match; nothing to purge")
        return 0
    if not yes:
        if not as_json:
            click.echo(dead_letter_table(letters))
        raise click.UsageError(
            f"{len(letters)} dead letter(s) match; nothing purged: add --yes to purge them")
    outcomes = dead_letters.purge(client, keys, settings, letters, operator=operator_name())
    if as_json:
        click.echo(json.dumps(outcomes, indent=2))
    else:
        purged = sum(outcome == "purged" for outcome in outcomes.values())
        skipped = len(outcomes) - purged
        click.echo(f"purged {purged} dead letter(s)"
                   + (f"; {skipped} left alone (replayed or gone meanwhile)" if skipped else ""))
    return 0
