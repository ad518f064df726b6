"""`monitao-pd tokens create|list|revoke`: bearer tokens for the HTTP API, with scopes."""

from __future__ import annotations

import json

import click

from cli.formatting import table
from cli.options import redis_errors
from config import tokens as api_tokens
from config.connections import redis_client
from config.keyspace import Keyspace
from config.settings import load_settings


@click.group()
def tokens() -> None:
    """API tokens: create (shown once), list, revoke. Only their SHA-256 is stored."""


@tokens.command("create")
@click.option("--name", required=True, help="who uses it, e.g. monitao-web (unique)")
@click.option("--scope", "scopes", multiple=True, metavar="SCOPE",
              help="repeat for each: " + ", ".join(api_tokens.SCOPES))
@redis_errors
def create(name: str, scopes: tuple[str, ...]) -> int:
    """Make a token and print it once (it cannot be shown again)."""
    settings = load_settings()
    token, record = api_tokens.create(redis_client(settings), Keyspace(settings.key_prefix),
                                      name, scopes)
    click.echo(token)
    click.echo(f"token {record.name!r} created with scopes {', '.join(record.scopes)}; "
               "it is shown only this once", err=True)
    return 0


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
@redis_errors
def list_tokens(as_json: bool) -> int:
    """List tokens by name with their scopes (never the tokens)."""
    settings = load_settings()
    found = api_tokens.all_tokens(redis_client(settings), Keyspace(settings.key_prefix))
    if as_json:
        click.echo(json.dumps([record.as_dict() for record in found], indent=2))
    elif not found:
        click.echo("no tokens")
    else:
        click.echo(table([[r.name, " ".join(r.scopes), r.created_at] for r in found],
                         ["name", "scopes", "created"]))
    return 0


@tokens.command("revoke")
@click.argument("name")
@redis_errors
def revoke(name: str) -> int:
    """Revoke a token: every API replica refuses it within 2 seconds."""
    settings = load_settings()
    api_tokens.revoke(redis_client(settings), Keyspace(settings.key_prefix), name)
    click.echo(f"revoked token {name!r}")
    return 0
