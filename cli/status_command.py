"""`monitao-pd status`: the fleet on one screen, and an alarm on the alerting.

Exit status 1 when the oldest pending event is older than `--max-age` (default
`MONITAO_PD_STATUS_MAX_PENDING_AGE_SECONDS`, 10 minutes): alerts are not getting through,
whatever the cause (no worker, PagerDuty down, a stuck key). Run it from cron, a
Kubernetes CronJob or a monitoring agent and page on a non-zero exit.
"""

from __future__ import annotations

import json

import click

from cli.formatting import status_screen
from cli.options import redis_errors
from config.settings import load_settings
from worker.fleet_state import DEFAULT_PING_TIMEOUT, fleet_status


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
