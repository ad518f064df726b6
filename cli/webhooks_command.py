"""`monitao-pd webhooks`: receive PagerDuty's webhooks v3 and sync them to MoniTao; and
`webhooks subscribe|unsubscribe|subscriptions`, the subscriptions made for the user.

A door onto webhooks/subscriptions.py: each subcommand parses its options, calls
`Subscriptions` once, and renders what it returns (values from outside escaped). The
subscription's secret is never printed; only its id.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from cli.formatting import table
from cli.options import redis_errors
from config.connections import redis_client
from config.settings import Settings, load_settings
from config.text import printable

if TYPE_CHECKING:
    from webhooks.subscriptions import Subscriptions


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8282, show_default=True)
@click.pass_context
def webhooks(ctx: click.Context, host: str, port: int) -> int:
    """Serve PagerDuty's webhooks v3 (POST /webhooks/pagerduty), signed with a secret from
    MONITAO_PD_WEBHOOK_SECRETS or of a subscription made with `webhooks subscribe`, and
    record each incident state change in its timeline. The subcommands manage those
    subscriptions."""
    if ctx.invoked_subcommand is not None:
        return 0
    from webhooks.service import serve

    serve(load_settings(), host, port)
    return 0


def _subscriptions(settings: Settings) -> Subscriptions:
    from webhooks.subscriptions import Subscriptions

    return Subscriptions(redis_client(settings), settings)


@webhooks.command()
@click.option("--destination", "destination", required=True,
              help="a destination with REST credentials (pagerduty_service_id, API token)")
@click.option("--url", required=True,
              help="the receiver's public URL, e.g. https://hooks.example.com/webhooks/pagerduty")
@click.option("--description", default=None, help="shown in PagerDuty's web UI")
@click.option("--json", "as_json", is_flag=True, help="print the stored record as JSON")
@redis_errors
def subscribe(destination: str, url: str, description: str | None, as_json: bool) -> int:
    """Subscribe URL to the incident events of the destination's PagerDuty service; keep
    the signing secret sealed (MONITAO_PD_SECRET_KEYS) for the receivers, which accept it
    within a second, without a restart. Prints the subscription id, never the secret."""
    made = _subscriptions(load_settings()).subscribe(destination, url, description)
    if as_json:
        click.echo(json.dumps(made.as_dict(), indent=2))
    else:
        click.echo(f"subscribed {printable(made.url)} to the incident events of service "
                   f"{printable(made.service_id)} (destination {made.destination}): "
                   f"subscription {made.id}")
    return 0


@webhooks.command()
@click.argument("subscription_id")
@click.option("--forget", is_flag=True,
              help="delete it here only (its destination can no longer call PagerDuty)")
@click.option("--json", "as_json", is_flag=True, help="print the outcome as JSON")
@redis_errors
def unsubscribe(subscription_id: str, forget: bool, as_json: bool) -> int:
    """Delete the subscription SUBSCRIPTION_ID at PagerDuty (one already gone is fine) and
    its stored secret: the receivers refuse its webhooks within a second."""
    done = _subscriptions(load_settings()).unsubscribe(subscription_id, forget=forget)
    if as_json:
        click.echo(json.dumps(done.as_dict(), indent=2))
    else:
        click.echo(f"unsubscribed {done.id} (at PagerDuty: {done.at_pagerduty})")
    return 0


@webhooks.command()
@click.option("--json", "as_json", is_flag=True, help="print the records as JSON")
@redis_errors
def subscriptions(as_json: bool) -> int:
    """List the stored subscriptions with their status at PagerDuty (`active`, `temporarily
    disabled`, `deleted at PagerDuty`, or `unknown: why`)."""
    found = _subscriptions(load_settings()).listing()
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in found], indent=2))
        return 0
    if not found:
        click.echo("no webhook subscriptions (monitao-pd webhooks subscribe makes one)")
        return 0
    rows = [[s.id, s.status or "", s.destination, s.url, s.created_at] for s in found]
    click.echo(table(rows, ["id", "status", "destination", "url", "created"]))
    return 0
