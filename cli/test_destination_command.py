"""`monitao-pd test-destination NAME`: a test trigger and its resolve, through the fleet.

The test itself is `producer.send_test.run_test` (shared with the HTTP API's
`POST /v1/destinations/{name}/test`); this command parses its options and renders.
"""

from __future__ import annotations

from typing import Any

import click

from cli.options import redis_errors
from config import defaults
from config.settings import load_settings
from config.text import printable
from producer.send_test import run_test


def describe(result: dict[str, Any]) -> str:
    return printable(_describe(result))


def _describe(result: dict[str, Any]) -> str:
    from cli.formatting import duration

    head = f"{result['action']:<8} {result['event_id'][:12]}  "
    if result["ok"]:
        return head + (f"delivered in {duration(result['latency_ms'])} "
                       f"(HTTP {result['http_status']}, request "
                       f"{float(result['attempt_latency_ms'] or 0):.1f} ms, "
                       f"{result['attempts']} attempt(s))")
    if result["state"] == "pending":
        return head + f"FAILED: {result['error']}; {result['attempts']} attempt(s)"
    return head + (f"FAILED: {result['state']} ({result['reason'] or '-'}): "
                   f"{result['error'] or '-'}")


@click.command("test-destination")
@click.argument("name")
@click.option("--timeout", type=click.FloatRange(min=0.1),
              default=defaults.TEST_DESTINATION_TIMEOUT_SECONDS, show_default=True,
              help="seconds to wait for each of the two events")
@click.option("--level", help="MoniTao level of the trigger (default: the least severe)")
@click.option("--json", "as_json", is_flag=True, help="print the two results as JSON")
@redis_errors
def test_destination(name: str, timeout: float, level: str | None, as_json: bool) -> int:
    """Send a test trigger and its resolve to destination NAME through the fleet.

    Prints each outcome with its latency; exits 1 if either was not delivered.
    """
    import json

    settings = load_settings()
    report = run_test(settings, name, timeout=timeout, level=level)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for result in report.results:
            click.echo(describe(result))
        click.echo(f"\n{'OK' if report.ok else 'FAILED'}: test incident {report.incident_id} "
                   f"on {name} (monitao-pd timeline {report.incident_id})")
    return 0 if report.ok else 1
