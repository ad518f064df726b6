"""`monitao-pd destinations add|update|list|show|remove|reencrypt`: run-time destinations.

A door onto config/registry.py: it parses options, calls the registry once, and renders the
records it returns. The routing key is never an argument (a process list is public on a
host): it is read from standard input (`--routing-key-stdin`) or from a variable named by
`--routing-key-env`, and every command only describes it (origin, length, fingerprint).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis

from cli.formatting import duration, reason_counts, table
from cli.options import redis_errors
from config import rest_checks
from config.connections import redis_client
from config.destinations import Destination, load_destinations, looks_like_routing_key
from config.errors import (
    ConfigurationError,
    ConflictError,
    InvalidDestinationError,
    RedisUnavailableError,
)
from config.registry import CLEARABLE, DestinationRecord, Registry, registry_for
from config.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])
# `config check` names this many undecryptable destinations, then counts the rest.
UNDECRYPTABLE_SHOWN = 20


def open_registry(settings: Settings) -> Registry:
    """The fleet's registry, with this process's key ring and the file's destinations (their
    keys resolved where this environment can, so they are described with a fingerprint)."""
    file: dict[str, Destination] = {}
    if settings.config is not None:
        try:
            file = load_destinations(settings.config)
        except ConfigurationError:
            file = load_destinations(settings.config, resolve_secrets=False)
    return registry_for(settings, redis_client(settings), file)


def registry_report(settings: Settings,
                    file: dict[str, Destination]) -> tuple[list[str], list[str]]:
    """What `config check` says of the registry: lines to print, and problems (names in
    both the file and the registry; routing keys this key ring cannot open). An unreachable
    Redis is said, not a problem of the configuration."""
    try:
        found = registry_for(settings, redis_client(settings), file).check()
    except RedisUnavailableError as exc:
        return [f"registry: not checked ({exc})"], []
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return [f"registry: not checked (Redis did not answer: {exc.__class__.__name__})"], []
    usage, undecryptable = found.usage, found.undecryptable
    keys = ", ".join(f"{key_id} ({count})" for key_id, count in usage.by_key_id.items())
    lines = [f"registry: {usage.destinations} run-time destination(s)"
             + (f", routing keys sealed under key id {keys}" if keys else "")
             + (" (monitao-pd destinations list)" if usage.destinations else "")]
    problems = [f"destinations.{name}: also a run-time destination in the registry (the "
                "file's is used); remove one of them" for name in found.clashes]
    for name, why in list(undecryptable.items())[:UNDECRYPTABLE_SHOWN]:
        problems.append(f"registry: {name}: its routing key cannot be opened ({why})")
    if len(undecryptable) > UNDECRYPTABLE_SHOWN:
        problems.append(f"registry: and {len(undecryptable) - UNDECRYPTABLE_SHOWN} more "
                        "destination(s) whose routing key cannot be opened")
    return lines, problems


def rest_report(settings: Settings,
                file: dict[str, Destination]) -> tuple[list[str], list[str]]:
    """What `config check` says of REST credentials: each destination's checked now with a
    `GET` of its service (lines), and the refused ones (problems). No answer from PagerDuty
    is said, not a problem of the configuration."""
    try:
        registry = registry_for(settings, redis_client(settings), file)
        destinations = registry.with_rest()
    except (RedisUnavailableError, redis.ConnectionError, redis.TimeoutError):
        destinations = [d for d in file.values() if d.has_rest]
    if not destinations:
        return [], []
    checks = rest_checks.check_all(destinations, ca_file=settings.rest_ca_file,
                                   timeout=settings.rest_timeout_seconds)
    return ([f"pagerduty rest: {c.line}" for c in checks if not c.refused],
            [f"pagerduty rest: {c.line}" for c in checks if c.refused])


def setting_options(command: F) -> F:
    """The options of `add` and `update`: the routing key's source and every setting."""
    for option in reversed((
        click.option("--routing-key-stdin", is_flag=True,
                     help="read the routing key from standard input"),
        click.option("--routing-key-env", metavar="VAR",
                     help="read the routing key from environment variable VAR"),
        click.option("--region", help="us or eu (events_url overrides it)"),
        click.option("--events-url", metavar="URL",
                     help="an explicit Events API URL ('' to go back to the region's)"),
        click.option("--source", help="the payload's source (default MoniTao)"),
        click.option("--client", help="the client name shown in PagerDuty"),
        click.option("--client-url", metavar="URL", help="link shown in PagerDuty ('' clears)"),
        click.option("--rate-limit", metavar="N", help="events per minute for this key"),
        click.option("--severity", "severities", multiple=True, metavar="LEVEL=SEVERITY",
                     help="map a MoniTao level to critical/error/warning/info (repeat; "
                          "update merges, LEVEL= removes a level)"),
        click.option("--coalesce/--no-coalesce", default=None,
                     help="alert-storm coalescing"),
        click.option("--account", help="the MoniTao customer it belongs to ('' clears)"),
        click.option("--service-id", metavar="ID",
                     help="PagerDuty service id for the REST API (maintenance windows, "
                          "webhook subscriptions); '' drops the REST credentials"),
        click.option("--api-token-stdin", is_flag=True,
                     help="read the PagerDuty REST API token from standard input"),
        click.option("--api-token-env", metavar="VAR",
                     help="read the PagerDuty REST API token from environment variable VAR"),
        click.option("--from", "pagerduty_from", metavar="EMAIL",
                     help="the From email an account-level API token needs ('' clears)"),
        click.option("--api-url", metavar="URL",
                     help="the REST API's base URL (default: the region's; '' clears)"),
    )):
        command = option(command)
    return command


def read_routing_key(from_stdin: bool, variable: str | None) -> tuple[str | None, list[str]]:
    """The routing key from standard input or a named variable, and any problem getting it
    (never showing it)."""
    return read_secret("routing_key", "routing key", from_stdin, variable)


def read_secret(field: str, what: str, from_stdin: bool,
                variable: str | None) -> tuple[str | None, list[str]]:
    """A secret (`what`, for setting `field`) from standard input or a named variable, and
    any problem getting it (never showing it)."""
    option = "--" + field.replace("_", "-").removeprefix("pagerduty-")
    if from_stdin and variable:
        return None, [f"{field}: give either {option}-stdin or {option}-env"]
    if variable is not None:
        if looks_like_routing_key(variable):
            return None, [f"{field}: {option}-env looks like a {what} itself "
                          "(not shown); give the name of the variable that holds it"]
        if variable not in os.environ:
            shown = f"${variable}" if variable.isidentifier() else repr(variable)
            return None, [f"{field}: environment variable {shown} is not set"]
        return os.environ[variable].strip(), []
    if from_stdin:
        if sys.stdin.isatty():
            return click.prompt(what, hide_input=True, err=True).strip(), []
        return sys.stdin.read().strip(), []
    return None, []


def read_secrets(options: dict[str, Any]) -> tuple[str | None, str | None, list[str]]:
    """The routing key and the REST API token the options name (taking them out of
    `options`), and any problem getting them. Standard input holds one of them at most."""
    key_stdin, key_env = options.pop("routing_key_stdin"), options.pop("routing_key_env")
    token_stdin, token_env = options.pop("api_token_stdin"), options.pop("api_token_env")
    if key_stdin and token_stdin:
        return None, None, ["--routing-key-stdin and --api-token-stdin: standard input holds "
                            "one secret; give the other with its -env option"]
    routing_key, problems = read_routing_key(key_stdin, key_env)
    api_token, more = read_secret("pagerduty_api_token", "API token", token_stdin, token_env)
    return routing_key, api_token, problems + more


def parse_settings(options: dict[str, Any], *, for_update: bool) -> tuple[dict[str, Any],
                                                                          list[str]]:
    """The settings the options give, as the registry takes them, and parsing problems."""
    names = {"region": "region", "events_url": "events_url", "source": "source",
             "client": "client", "client_url": "client_url",
             "rate_limit": "rate_limit_per_minute", "coalesce": "coalesce",
             "account": "account", "service_id": "pagerduty_service_id",
             "pagerduty_from": "pagerduty_from", "api_url": "pagerduty_api_url"}
    settings: dict[str, Any] = {}
    for option, setting in names.items():
        value = options.get(option)
        if value is None:
            continue
        if value == "" and setting in CLEARABLE:
            value = None  # cleared
        settings[setting] = value
    problems = []
    if options.get("severities"):
        severity: dict[str, str | None] = {}
        for entry in options["severities"]:
            level, sep, value = entry.partition("=")
            if not sep or not level:
                problems.append(f"severity_map: {entry!r} is not LEVEL=SEVERITY")
            elif value or for_update:
                severity[level] = value or None
            else:
                problems.append(f"severity_map.{level}: no severity given ({entry!r})")
        settings["severity_map"] = severity
    return settings, problems


def key_summary(record: DestinationRecord) -> str:
    """The routing key in a few words, no character of it."""
    key = record.routing_key
    if not key.resolved:
        return f"not resolved here (from ${key.variable})" if key.variable else "not resolved"
    origin = {"registry": f"sealed, key id {key.key_id}",
              "env": f"from ${key.variable}", "inline": "inline"}[key.origin]
    return f"{key.length} chars, sha256 {key.fingerprint}, {origin}"


def rest_summary(record: DestinationRecord) -> str:
    """The REST credentials in a few words, the token only described."""
    token = record.pagerduty_api_token
    if record.pagerduty_service_id is None or token is None:
        return "none (no maintenance sync, webhook subscriptions or incident lookups)"
    if not token.resolved:
        described = f"token not resolved here (from ${token.variable})"
    else:
        origin = {"registry": f"sealed, key id {token.key_id}", "env": f"from ${token.variable}",
                  "inline": "inline"}[token.origin]
        described = f"token {token.length} chars, sha256 {token.fingerprint}, {origin}"
    return (f"service {record.pagerduty_service_id} at {record.pagerduty_api_url}, "
            f"{described}" + (f", from {record.pagerduty_from}" if record.pagerduty_from
                              else ""))


def record_lines(record: DestinationRecord) -> list[str]:
    """A destination's settings as `field: value` lines."""
    severity = ", ".join(f"{k}->{v}" for k, v in record.severity_map.items())
    lines = [
        f"destination:    {record.name} ({record.origin})",
        f"account:        {record.account or '-'}",
        f"events url:     {record.url}" + (" (explicit)" if record.events_url else
                                            f" (region {record.region})"),
        f"routing key:    {key_summary(record)}",
        f"pagerduty rest: {rest_summary(record)}",
        f"source/client:  {record.source} / {record.client}",
        f"client url:     {record.client_url or '-'}",
        f"per minute:     {record.rate_limit_per_minute}",
        f"severity map:   {severity}",
        f"coalesce:       {'yes' if record.coalesce else 'no'}",
    ]
    if record.origin == "registry":
        lines.append(f"version:        {record.version}, created {_when(record.created_at)}, "
                     f"updated {_when(record.updated_at)}")
    else:
        lines.append(f"maintenance:    {record.maintenance_windows} window(s) in the file")
    return lines


def _when(moment: Any) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "-"


def _refuse(problems: list[str], registry: Registry, name: str, settings: dict[str, Any],
            routing_key: str | None, api_token: str | None, *, adding: bool) -> None:
    """Raise every problem at once: the options' and, when adding, the registry's for the
    fields the options did not already fault."""
    if not problems:
        return
    if adding:
        faulted = {problem.partition(":")[0] for problem in problems}
        try:
            registry.validate_new(name, settings, routing_key, api_token)
        except InvalidDestinationError as exc:
            problems = problems + [p for p in exc.problems
                                   if p.partition(":")[0] not in faulted]
    raise InvalidDestinationError(problems)


@click.group()
def destinations() -> None:
    """Destinations at run time: stored in Redis (routing keys encrypted), seen by every
    worker within seconds. The destinations file's are listed too, and read-only here."""


@destinations.command("add")
@click.argument("name")
@setting_options
@redis_errors
def add(name: str, **options: Any) -> int:
    """Add destination NAME; its routing key from stdin or --routing-key-env VAR (and its
    PagerDuty REST API token, with --service-id, from --api-token-env VAR or stdin)."""
    settings = load_settings()
    registry = open_registry(settings)
    routing_key, api_token, problems = read_secrets(options)
    given, more = parse_settings(options, for_update=False)
    _refuse(problems + more, registry, name, given, routing_key, api_token, adding=True)
    record = registry.add(name, given, routing_key, api_token)
    click.echo(f"added destination {record.name}: {record.url}, routing key "
               f"{key_summary(record)}" + (f", account {record.account}" if record.account
                                           else ""))
    return 0


@destinations.command("update")
@click.argument("name")
@setting_options
@redis_errors
def update(name: str, **options: Any) -> int:
    """Change what is given of destination NAME; the rest stays as it is."""
    settings = load_settings()
    registry = open_registry(settings)
    routing_key, api_token, problems = read_secrets(options)
    given, more = parse_settings(options, for_update=True)
    _refuse(problems + more, registry, name, given, routing_key, api_token, adding=False)
    record = registry.update(name, given, routing_key, api_token)
    click.echo(f"updated destination {record.name} (version {record.version}): every worker "
               "uses it within 2 s")
    click.echo("\n".join(record_lines(record)))
    return 0


@destinations.command("list")
@click.option("--account", help="only this account's")
@click.option("--json", "as_json", is_flag=True, help="one JSON array of records")
@redis_errors
def list_destinations(account: str | None, as_json: bool) -> int:
    """List destinations (file and registry) in name order, keys described, never shown."""
    registry = open_registry(load_settings())
    records = registry.records(account=account)
    if as_json:
        click.echo("[", nl=False)
        for index, record in enumerate(records):
            click.echo(("," if index else "") + "\n  " + record.model_dump_json(), nl=False)
        click.echo("\n]")
        return 0
    rows = [[r.name, r.origin, r.account or "-", r.url, str(r.rate_limit_per_minute),
             key_summary(r)] for r in records]
    if not rows:
        click.echo("no destinations" + (f" for account {account!r}" if account else ""))
        return 0
    click.echo(table(rows, ["name", "from", "account", "events url", "per minute",
                            "routing key"]))
    return 0


@destinations.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@redis_errors
def show(name: str, as_json: bool) -> int:
    """Show destination NAME and its figures now: pending events, budget, cooldown,
    circuit and dead letters."""
    settings = load_settings()
    detail = open_registry(settings).detail(name)
    if as_json:
        click.echo(detail.model_dump_json(indent=2))
        return 0
    state = detail.state
    click.echo("\n".join(record_lines(detail)))
    cooldown = (duration(state.cooldown_remaining_seconds * 1000) + " left"
                if state.cooling_down else "no")
    click.echo(f"pending events: {state.pending_events}\n"
               f"rate window:    {state.rate_window_requests} of "
               f"{detail.rate_limit_per_minute} in the last "
               f"{settings.rate_window_seconds:g} s, {state.rate_waiting_keys} key(s) waiting\n"
               f"429 cooldown:   {cooldown}\n"
               f"circuit:        {state.circuit} ({state.circuit_failures} failure(s) in a row)\n"
               f"dead letters:   "
               f"{reason_counts(state.dead_letters) if state.dead_letters else 'none'}")
    return 0


@destinations.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="remove it even with pending events")
@redis_errors
def remove(name: str, yes: bool) -> int:
    """Remove run-time destination NAME, its budget, cooldown and (if unused) circuit.

    Pending events are dead-lettered as destination_removed: without --yes the command
    says how many and removes nothing. Add NAME again, then `replay` delivers them.
    """
    registry = open_registry(load_settings())
    try:
        removal = registry.remove(name, confirm=yes)
    except ConflictError as exc:
        if exc.code != "pending_events":
            raise
        click.echo(f"error: {exc}", err=True)
        click.echo("  nothing was removed; run again with --yes to remove it", err=True)
        return 2
    click.echo(f"removed destination {name}")
    if removal.pending_events:
        click.echo(f"  {removal.pending_events} pending event(s) in {removal.woken_keys} key(s) "
                   "are being dead-lettered as destination_removed; once it is added again: "
                   f"monitao-pd replay --destination {name} --reason destination_removed")
    if removal.windows_removed:
        click.echo(f"  its maintenance window(s) {', '.join(removal.windows_removed)} were "
                   "removed")
    if removal.circuit_deleted:
        click.echo("  its endpoint's circuit state was deleted (no destination posts there)")
    return 0


@destinations.command("reencrypt")
@redis_errors
def reencrypt() -> int:
    """Re-encrypt every stored routing key under the first key of MONITAO_PD_SECRET_KEYS, so
    an older key can be dropped from the ring. Exits 1 if some could not be."""
    registry = open_registry(load_settings())
    report = registry.reencrypt()
    click.echo(f"re-encrypted {report.resealed} of {report.total} destination(s) under key "
               f"id {report.key_id} ({report.already} already were)")
    for why in report.failed.values():
        click.echo(f"  not re-encrypted: {why}", err=True)
    from webhooks.subscriptions import Subscriptions

    resealed, failed = Subscriptions(registry.client, load_settings()).reencrypt()
    if resealed or failed:
        click.echo(f"re-encrypted {resealed} webhook subscription secret(s)")
    for why in failed.values():
        click.echo(f"  not re-encrypted: {why}", err=True)
    if report.failed or failed:
        click.echo(f"{len(report.failed) + len(failed)} destination(s) or subscription(s) "
                   "still need a key that is not first in the ring: keep it until they are "
                   "fixed", err=True)
        return 1
    return 0
