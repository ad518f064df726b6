"""What the operating commands share: dead-letter filters, times, Redis errors as messages."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click
import redis

from config.destinations import Destination, load_destinations
from config.errors import ConfigurationError, MonitaoPDError, RedisUnavailableError
from config.settings import Settings, load_settings, redact_url
from worker.dead_letters import Filters

F = TypeVar("F", bound=Callable[..., Any])

RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TIME_HELP = "ISO 8601 time (UTC unless it has an offset) or an age such as 30m, 2h, 7d"


def parse_time(text: str, now: datetime | None = None) -> int:
    """Epoch milliseconds for an ISO 8601 time or an age ago (`90s`, `15m`, `2h`, `7d`)."""
    now = now or datetime.now(UTC)
    match = RELATIVE.match(text.strip().lower())
    if match:
        moment = now - timedelta(seconds=float(match[1]) * UNITS[match[2]])
    else:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(f"{text!r} is not a time ({TIME_HELP})") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class TimeParam(click.ParamType):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        return parse_time(str(value))


def filter_options(command: F) -> F:
    """`--destination`, `--reason`, `--since`, `--until` for commands over dead letters."""
    for option in reversed((
        click.option("--destination", help="only this destination"),
        click.option("--reason", help="only this reason (rejected, expired, http_404, ...)"),
        click.option("--since", type=TimeParam(), help=f"dead-lettered at or after: {TIME_HELP}"),
        click.option("--until", type=TimeParam(), help=f"dead-lettered at or before: {TIME_HELP}"),
    )):
        command = option(command)
    return command


def make_filters(destination: str | None, reason: str | None, since: int | None,
                 until: int | None) -> Filters:
    if since is not None and until is not None and since > until:
        raise click.BadParameter("--since is after --until")
    return Filters(destination=destination, reason=reason, since_ms=since, until_ms=until)


def redis_errors(command: F) -> F:
    """Turn a Redis failure in the middle of a command into a one-line error (exit 2)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailableError(
                f"lost Redis at {_redis_url()} ({exc.__class__.__name__}: {exc})") from None
        except redis.RedisError as exc:
            raise MonitaoPDError(
                f"Redis at {_redis_url()} refused a command ({exc.__class__.__name__}: "
                f"{exc})") from None

    return wrapper  # type: ignore[return-value]


def _redis_url() -> str:
    try:
        return redact_url(load_settings().redis_url)
    except ConfigurationError:
        return "the configured URL"


def configured_destinations(settings: Settings) -> dict[str, Destination] | None:
    """The destinations file's entries without their secrets, or None when none is set."""
    if settings.config is None:
        return None
    return load_destinations(settings.config, resolve_secrets=False)
