"""`monitao-pd status`: the fleet on one screen, and an alarm on the alerting.

Exit status 1 when the oldest pending event is older than `--max-age` (default
`MONITAO_PD_STATUS_MAX_PENDING_AGE_SECONDS`, 10 minutes): alerts are not getting through,
whatever the cause (no worker, PagerDuty down, a stuck key). Run it from cron, a
Kubernetes CronJob or a monitoring agent and page on a non-zero exit.
"""

from __future__ import annotations

import json
from typing import Any

import click
import redis
from kombu.exceptions import OperationalError

from cli.formatting import duration, status_screen
from cli.health_command import ping_workers
from cli.options import configured_destinations, redis_errors
from config.connections import redact_urls, redis_client
from config.errors import ConfigurationError
from config.keyspace import Keyspace
from config.registry import Registry
from config.settings import Settings, load_settings
from worker.fleet_state import read_state

DEFAULT_PING_TIMEOUT = 1.0


def fleet_status(settings: Settings, *, max_age: float, ping_timeout: float,
                 ping: bool = True) -> dict[str, Any]:
    """Everything `status` shows, as one JSON-ready dict with `healthy` and `verdict`."""
    client = redis_client(settings)
    try:
        destinations = configured_destinations(settings)
        config_error = None
    except ConfigurationError as exc:
        destinations, config_error = None, "; ".join(exc.problems)
    broker: redis.Redis | None = client
    if settings.celery_broker_url != settings.redis_url:
        try:
            broker = redis_client(settings, url=settings.celery_broker_url, timeout=ping_timeout)
        except Exception:  # noqa: BLE001 - the queue length is then unknown, not fatal
            broker = None
    state = read_state(client, Keyspace(settings.key_prefix), destinations,
                       circuit_threshold=settings.circuit_threshold,
                       rate_window_seconds=settings.rate_window_seconds, broker=broker)
    result = state.as_dict()
    result["registry"] = Registry(client, Keyspace(settings.key_prefix),
                                  key_ring=settings.key_ring()).key_usage().as_dict()
    result["workers"], result["workers_error"] = None, None
    if ping:
        try:
            result["workers"] = ping_workers(settings, timeout=ping_timeout)
        except (OperationalError, OSError) as exc:
            result["workers_error"] = (f"cannot reach the broker at "
                                       f"{redact_urls(settings.celery_broker_url)} "
                                       f"({exc.__class__.__name__})")
    else:
        result["workers_error"] = "not asked"
    result["config_error"] = config_error
    age = state.oldest_pending_age_seconds
    result["max_pending_age_seconds"] = max_age
    result["healthy"] = age is None or age <= max_age
    if age is None:
        result["verdict"] = "nothing pending"
    elif result["healthy"]:
        result["verdict"] = (f"oldest pending event is {duration(age * 1000)} old "
                             f"(threshold {duration(max_age * 1000)})")
    else:
        result["verdict"] = (f"oldest pending event is {duration(age * 1000)} old, over the "
                             f"threshold of {duration(max_age * 1000)}")
    return result


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--max-age", type=click.FloatRange(min=0, min_open=True), default=None,
              help="seconds; exit 1 when the oldest pending event is older "
                   "(default MONITAO_PD_STATUS_MAX_PENDING_AGE_SECONDS, 600)")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_PING_TIMEOUT,
              show_default=True, help="seconds to wait for workers to answer a ping")
@click.option("--no-ping", is_flag=True, help="do not ask the workers (faster; no broker)")
@redis_errors
def status(as_json: bool, max_age: float | None, timeout: float, no_ping: bool) -> int:
    """Show the fleet on one screen; exit 1 when the oldest pending event is too old.

    Workers online, pending events and the age of the oldest, keys due, deliveries in
    flight, dead letters by reason, destinations cooling down (429, rate budget, circuit).
    """
    settings = load_settings()
    threshold = max_age if max_age is not None else settings.status_max_pending_age_seconds
    result = fleet_status(settings, max_age=threshold, ping_timeout=timeout, ping=not no_ping)
    click.echo(json.dumps(result, indent=2) if as_json else status_screen(result))
    return 0 if result["healthy"] else 1
