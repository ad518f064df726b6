"""`monitao-pd test-destination NAME`: a test trigger and its resolve, through the fleet.

The two events go the way every alert goes (producer, Redis, a worker, PagerDuty), so the
test covers the routing key, the endpoint, the rate budget and the workers at once. They
carry a dedup_key of their own (monitor `monitao-pd-test`, incident `test-...`), so no
real incident is touched; the test incident is opened and resolved at once. The trigger
uses the destination's least severe level. The resolve is sent even when the trigger did
not go through in time, so that a trigger delivered late is still resolved.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import click

from cli.options import redis_errors
from config import defaults
from config.destinations import Destination
from config.errors import NotFoundError
from config.settings import Settings, load_settings
from worker import timeline

TEST_MONITOR = "monitao-pd-test"
# Least severe first: a test should page as gently as the service allows.
GENTLE = ("info", "warning", "error", "critical")
POLL_SECONDS = 0.1


def gentlest_level(destination: Destination) -> str:
    """The MoniTao level that maps to the least severe PagerDuty severity."""
    return min(destination.severity_map,
               key=lambda level: GENTLE.index(destination.severity_map[level]))


def wait_final(producer: Any, event_id: str, timeout: float) -> dict[str, str]:
    """The event's record once it left `pending`, or as it is at the deadline."""
    key = producer.keys.event(event_id)
    deadline = time.monotonic() + timeout
    while True:
        fields = producer.redis.hgetall(key)
        if fields.get("state") not in (None, "pending") or time.monotonic() >= deadline:
            return fields
        time.sleep(POLL_SECONDS)


def outcome(action: str, event_id: str, fields: dict[str, str],
            entries: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
    """One event's result: state, HTTP status, attempt latency, enqueue-to-final latency."""
    attempts = [e for e in entries if e.get("event_id") == event_id and e["stage"] == "attempt"]
    last = attempts[-1] if attempts else {}
    state = fields.get("state", "missing")
    result: dict[str, Any] = {
        "action": action, "event_id": event_id, "state": state,
        "ok": state == "delivered", "attempts": len(attempts),
        "http_status": last.get("http_status"), "attempt_latency_ms": last.get("latency_ms"),
        "latency_ms": None, "error": fields.get("last_error") or last.get("error") or None,
        "reason": fields.get("reason") if state == "dead_lettered" else None,
    }
    if fields.get("finished_at") and fields.get("enqueued_at") and state != "pending":
        result["latency_ms"] = float(fields["finished_at"]) - float(fields["enqueued_at"])
    if state == "pending":
        result["error"] = f"not delivered within {timeout:g} s" + (
            f" (last: {result['error']})" if result["error"] else "")
    return result


def describe(result: dict[str, Any]) -> str:
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


def run_test(settings: Settings, name: str, *, timeout: float,
             level: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Send the test trigger, wait, send its resolve, wait; (incident id, two results)."""
    from producer import AlertProducer

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    incident = f"test-{stamp}-{uuid.uuid4().hex[:6]}"
    base = {"destination": name, "monitor_id": TEST_MONITOR, "incident_id": incident}
    results = []
    # the file's destinations (MONITAO_PD_CONFIG) and the registry's
    with AlertProducer(settings) as producer:
        destination = producer.destinations.get(name)
        if destination is None:
            raise NotFoundError(f"unknown destination {name!r} "
                                f"(configured: {producer.destinations.describe_names()})")
        for action in ("trigger", "resolve"):
            event = dict(base, action=action)
            if action == "trigger":
                event.update(level=level or gentlest_level(destination),
                             summary=f"[TEST] monitao-pd test-destination {name}: "
                                     "please ignore, resolved at once",
                             monitor_name="monitao-pd test-destination")
            event_id = producer.send(event)
            fields = wait_final(producer, event_id, timeout)
            entries = list(timeline.read(producer.redis, producer.keys, incident))
            results.append(outcome(action, event_id, fields, entries, timeout))
    return incident, results


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
    incident, results = run_test(settings, name, timeout=timeout, level=level)
    ok = all(r["ok"] for r in results)
    if as_json:
        click.echo(json.dumps({"destination": name, "incident_id": incident, "ok": ok,
                               "results": results}, indent=2))
    else:
        for result in results:
            click.echo(describe(result))
        click.echo(f"\n{'OK' if ok else 'FAILED'}: test incident {incident} on {name} "
                   f"(monitao-pd timeline {incident})")
    return 0 if ok else 1
