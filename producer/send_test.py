"""Send test: a test trigger and its resolve to one destination, through the fleet.

The two events go the way every alert goes (producer, Redis, a worker, PagerDuty), so the
test covers the routing key, the endpoint, the rate budget and the workers at once. They
carry a dedup_key of their own (monitor `monitao-pd-test`, incident `test-...`), so no
real incident is touched; the test incident is opened and resolved at once. The trigger
uses the destination's least severe level. The resolve is sent even when the trigger did
not go through in time, so that a trigger delivered late is still resolved.

`monitao-pd test-destination` and `POST /v1/destinations/{name}/test` both call
`run_test` and only render its `SendTest`; the console runs the same `start_test` step by
step, showing each outcome as it comes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from config.destinations import Destination
from config.errors import NotFoundError
from config.settings import Settings
from worker import timeline

if TYPE_CHECKING:
    from producer.producer import AlertProducer

TEST_MONITOR = "monitao-pd-test"
# Least severe first: a test should page as gently as the service allows.
GENTLE = ("info", "warning", "error", "critical")
POLL_SECONDS = 0.05


@dataclass
class SendTest:
    """The outcome of one send test: its incident and one result per event."""

    destination: str
    incident_id: str
    results: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        """Whether both events were delivered."""
        return all(result["ok"] for result in self.results)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: destination, incident_id, ok and the two results."""
        return {"destination": self.destination, "incident_id": self.incident_id,
                "ok": self.ok, "results": self.results}


def gentlest_level(destination: Destination) -> str:
    """The MoniTao level that maps to the least severe PagerDuty severity."""
    return min(destination.severity_map,
               key=lambda level: GENTLE.index(destination.severity_map[level]))


def wait_final(producer: AlertProducer, event_id: str, deadline: float) -> dict[str, str]:
    """The event's record once it left `pending`, or as it is at the deadline (monotonic)."""
    key = producer.keys.event(event_id)
    while True:
        fields = producer.redis.hgetall(key)
        if fields.get("state") not in (None, "pending") or time.monotonic() >= deadline:
            return fields
        time.sleep(POLL_SECONDS)


def outcome(action: str, event_id: str, fields: dict[str, str],
            entries: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
    """One event's result: state (`delivered`, `dead_lettered`, `pending`...), HTTP status,
    attempt latency, enqueue-to-final latency, the reason and PagerDuty's errors."""
    attempts = [e for e in entries if e.get("event_id") == event_id and e["stage"] == "attempt"]
    last = attempts[-1] if attempts else {}
    state = fields.get("state", "missing")
    result: dict[str, Any] = {
        "action": action, "event_id": event_id, "state": state,
        "ok": state == "delivered", "attempts": len(attempts),
        "http_status": last.get("http_status"), "attempt_latency_ms": last.get("latency_ms"),
        "latency_ms": None, "error": fields.get("last_error") or last.get("error") or None,
        "reason": fields.get("reason") if state == "dead_lettered" else None,
        "errors": _errors(fields.get("errors")),
    }
    if fields.get("finished_at") and fields.get("enqueued_at") and state != "pending":
        result["latency_ms"] = float(fields["finished_at"]) - float(fields["enqueued_at"])
    if state == "pending":
        result["error"] = f"not delivered within {timeout:g} s" + (
            f" (last: {result['error']})" if result["error"] else "")
    return result


def _errors(stored: str | None) -> list[str]:
    if not stored:
        return []
    try:
        found = json.loads(stored)
    except ValueError:
        return [stored]
    return [str(e) for e in found] if isinstance(found, list) else [str(found)]


@dataclass
class Step:
    """One step of a running send test: an event sent (`result` None, waiting for its
    outcome), or its outcome (`result`, as in `SendTest.results`)."""

    action: str
    event_id: str
    result: dict[str, Any] | None = None


class SendTestRun:
    """A send test ready to go (its destination found, its incident named): `steps()` runs
    it step by step, for a door that shows each outcome as it happens; `run()` all at once."""

    def __init__(self, sender: AlertProducer, destination: Destination, incident_id: str, *,
                 timeout: float, level: str | None, per_event: bool, own: bool) -> None:
        self.destination, self.incident_id = destination.name, incident_id
        self._sender, self._dest, self._own = sender, destination, own
        self._timeout, self._level, self._per_event = timeout, level, per_event

    def steps(self) -> Iterator[Step]:
        """Send the trigger, wait, send its resolve, wait: a step when each is sent and
        one with its outcome."""
        sender, name, timeout = self._sender, self.destination, self._timeout
        base = {"destination": name, "monitor_id": TEST_MONITOR,
                "incident_id": self.incident_id}
        deadline = time.monotonic() + timeout
        try:
            for action in ("trigger", "resolve"):
                event = dict(base, action=action)
                if action == "trigger":
                    event.update(level=self._level or gentlest_level(self._dest),
                                 summary=f"[TEST] monitao-pd test-destination {name}: "
                                         "please ignore, resolved at once",
                                 monitor_name="monitao-pd test-destination")
                if self._per_event:
                    deadline = time.monotonic() + timeout
                event_id = sender.send(event)
                yield Step(action, event_id)
                fields = wait_final(sender, event_id, deadline)
                entries = list(timeline.read(sender.redis, sender.keys, self.incident_id))
                yield Step(action, event_id, outcome(action, event_id, fields, entries, timeout))
        finally:
            self.close()

    def run(self) -> SendTest:
        """Run every step; the outcomes."""
        results = [step.result for step in self.steps() if step.result is not None]
        return SendTest(self.destination, self.incident_id, results)

    def close(self) -> None:
        """Release the producer this run opened (a run never started, or left half-way)."""
        if self._own:
            self._sender.close()
            self._own = False


def start_test(
    settings: Settings, name: str, *, timeout: float, level: str | None = None,
    per_event: bool = True, destinations: Mapping[str, Destination] | None = None,
    producer: AlertProducer | None = None,
) -> SendTestRun:
    """A send test of destination `name`, not yet started.

    `timeout` bounds the wait for each event (`per_event`), or for both together (an HTTP
    answer must come in time). Raises `NotFoundError` for an unknown destination; its
    steps raise `InvalidEventError` for a level the destination does not map.
    """
    from producer.producer import AlertProducer

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    incident = f"test-{stamp}-{uuid.uuid4().hex[:6]}"
    own = producer is None
    # the file's destinations (MONITAO_PD_CONFIG, or those given) and the registry's
    sender = producer or AlertProducer(settings, destinations=destinations)
    destination = sender.destinations.get(name)
    if destination is None:
        if own:
            sender.close()
        raise NotFoundError(f"unknown destination {name!r} "
                            f"(configured: {sender.destinations.describe_names()})")
    return SendTestRun(sender, destination, incident, timeout=timeout, level=level,
                       per_event=per_event, own=own)


def run_test(
    settings: Settings, name: str, *, timeout: float, level: str | None = None,
    per_event: bool = True, destinations: Mapping[str, Destination] | None = None,
    producer: AlertProducer | None = None,
) -> SendTest:
    """Send the test trigger, wait, send its resolve, wait; return both results (as
    `start_test(...).run()`)."""
    return start_test(settings, name, timeout=timeout, level=level, per_event=per_event,
                      destinations=destinations, producer=producer).run()
