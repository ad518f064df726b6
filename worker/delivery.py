"""One delivery pass over one slot (destination, dedup_key): the heart of the worker.

The pass leases the slot, then takes its events oldest first: build the body, post it,
and finish each in one atomic script. A retryable failure keeps the head event in place
and makes the whole slot wait, so a resolve can never overtake its trigger, while other
slots go on. The pass returns as soon as the slot is empty, waiting, or has had its turn.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from config.keyspace import slot_of
from producer.event import AlertEvent
from worker import timeline
from worker.backoff import retry_delay
from worker.context import FleetContext
from worker.payload import build_event
from worker.sender import Outcome, post_event

log = logging.getLogger(__name__)


@dataclass
class PassReport:
    """What one pass did: how it ended and how many events reached a final state."""

    slot: str
    ended: str  # "empty", "waiting", "busy", "backing_off", "turn_over", "lease_lost"
    finished: int = 0


@dataclass(frozen=True)
class Head:
    """The event at the head of a slot's mailbox, as stored."""

    event_id: str
    now_ms: int
    fields: dict[str, str]

    @property
    def attempts(self) -> int:
        return int(self.fields.get("attempts") or 0)


def deliver_slot(
    ctx: FleetContext, destination: str, dedup_key: str, *, task_id: str | None = None
) -> PassReport:
    """Deliver the pending events of one slot, in order, until it is empty or must wait."""
    slot = slot_of(destination, dedup_key)
    keys, settings = ctx.keys, ctx.settings
    token = uuid.uuid4().hex
    lease_ms = int(settings.lease_seconds * 1000)
    acquired = ctx.scripts.acquire(
        keys=[keys.lease(slot), keys.schedule, keys.mailbox(slot), keys.hold(slot)],
        args=[token, lease_ms, slot],
    )
    if acquired == 0:
        return PassReport(slot, "empty")
    if acquired < 0:
        return PassReport(slot, "backing_off" if acquired == -2 else "busy")

    report = PassReport(slot, "empty")
    deadline = time.monotonic() + settings.pass_seconds
    try:
        while True:
            if time.monotonic() > deadline:
                _release(ctx, token, slot, due_in_ms=0)
                report.ended = "turn_over"
                return report
            raw = ctx.scripts.take_head(
                keys=[keys.lease(slot), keys.schedule, keys.mailbox(slot)],
                args=[token, lease_ms, slot, keys.event("")],
            )
            if raw[0] != 1:
                report.ended = "empty" if raw[0] == 0 else "lease_lost"
                return report
            head = Head(raw[2], int(raw[1]), dict(zip(raw[3::2], raw[4::2], strict=True)))
            if _deliver_head(ctx, token, destination, dedup_key, head, task_id):
                report.finished += 1
            else:
                report.ended = "waiting"
                return report
    except Exception:
        # Leave the slot due again shortly; if Redis itself is gone the lease expires and
        # the schedule brings the slot back all the same.
        log.exception("delivery pass for %s failed; the slot will be retried", slot)
        try:
            _release(ctx, token, slot, due_in_ms=int(settings.retry_base_seconds * 1000))
        except Exception:  # noqa: BLE001 - already failing; the lease TTL recovers the slot
            log.warning("could not release %s; its lease will expire", slot)
        raise


def _deliver_head(
    ctx: FleetContext, token: str, destination_name: str, dedup_key: str, head: Head,
    task_id: str | None,
) -> bool:
    """Act on the head event; True when it reached a final state, False when it waits."""
    settings = ctx.settings
    raw_event = head.fields.get("event")
    if raw_event is None:
        _finish(ctx, token, head, destination_name, dedup_key, None, "dead_lettered",
                reason="malformed", error="event record is missing")
        return True
    try:
        event = AlertEvent.from_json(raw_event)
    except ValidationError as exc:
        _finish(ctx, token, head, destination_name, dedup_key, None, "dead_lettered",
                reason="malformed", error=f"cannot decode the stored event: {exc.error_count()} "
                "problem(s)")
        return True

    age_ms = head.now_ms - int(float(head.fields.get("enqueued_at") or head.now_ms))
    if age_ms > settings.max_event_age_seconds * 1000:
        _finish(ctx, token, head, destination_name, dedup_key, event, "dead_lettered",
                reason="expired", error=f"undelivered after {age_ms / 1000:.0f} s")
        return True

    destination = ctx.destinations.get(destination_name)
    if destination is None:
        _finish(ctx, token, head, destination_name, dedup_key, event, "dead_lettered",
                reason="unknown_destination",
                error=f"destination {destination_name!r} is not configured on this worker")
        return True
    try:
        body = build_event(event, destination)
    except KeyError:
        _finish(ctx, token, head, destination_name, dedup_key, event, "dead_lettered",
                reason="invalid", error=f"level {event.level!r} has no severity mapping")
        return True

    outcome = post_event(ctx.http(), destination.url, body)
    attempt = head.attempts + 1
    attempt_entry = timeline.entry(
        "attempt", head.event_id, event.action, destination_name, dedup_key,
        attempt=attempt, http_status=outcome.http_status, latency_ms=outcome.latency_ms,
        error=outcome.error, worker=ctx.worker_name, task_id=task_id,
    )
    log.info(
        "attempt %d event=%s slot=%s/%s outcome=%s status=%s latency_ms=%.1f%s",
        attempt, head.event_id, destination_name, dedup_key, outcome.kind, outcome.http_status,
        outcome.latency_ms, f" error={outcome.error!r}" if outcome.error else "",
    )
    if outcome.kind == "retry":
        _retry(ctx, token, head, event, destination_name, dedup_key, attempt, outcome,
               attempt_entry)
        return False
    if outcome.kind == "delivered":
        _finish(ctx, token, head, destination_name, dedup_key, event, "delivered",
                attempt=attempt, outcome=outcome, attempt_entry=attempt_entry)
    else:
        reason = "rejected" if outcome.http_status == 400 else f"http_{outcome.http_status}"
        _finish(ctx, token, head, destination_name, dedup_key, event, "dead_lettered",
                reason=reason, error=outcome.error, attempt=attempt, outcome=outcome,
                attempt_entry=attempt_entry)
    return True


def _finish(
    ctx: FleetContext, token: str, head: Head, destination: str, dedup_key: str,
    event: AlertEvent | None, state: str, *, reason: str = "", error: str = "",
    attempt: int | None = None, outcome: Outcome | None = None,
    attempt_entry: list[str] | None = None,
) -> None:
    keys, settings = ctx.keys, ctx.settings
    slot = slot_of(destination, dedup_key)
    action = event.action if event else head.fields.get("action", "unknown")
    fields: dict[str, Any] = {"reason": reason} if reason else {}
    if attempt is not None:
        fields["attempts"] = str(attempt)
        fields["last_attempt"] = str(head.now_ms)
    if outcome is not None:
        fields["last_status"] = str(outcome.http_status or "")
        fields["last_error"] = outcome.error
        if outcome.errors:
            fields["errors"] = json.dumps(outcome.errors)
    elif error:
        fields["last_error"] = error

    entries = [attempt_entry] if attempt_entry else []
    if state == "delivered":
        entries.append(timeline.entry(
            "delivered", head.event_id, action, destination, dedup_key,
            pd_dedup_key=outcome.dedup_key if outcome else None,
        ))
    else:
        entries.append(timeline.entry(
            state, head.event_id, action, destination, dedup_key, reason=reason,
            error=error or (outcome.error if outcome else ""),
            errors=outcome.errors if outcome and outcome.errors else None,
        ))
    incident = event.incident_id if event else head.fields.get("incident_id", "unknown")
    retention_ms = int(settings.timeline_retention_seconds * 1000)
    ctx.scripts.finish(
        keys=[keys.lease(slot), keys.mailbox(slot), keys.schedule, keys.event(head.event_id),
              keys.timeline(incident), keys.dead_letters],
        args=[token, head.event_id, slot, state, int(settings.lease_seconds * 1000),
              int(settings.event_retention_seconds * 1000), retention_ms, retention_ms,
              json.dumps(fields), json.dumps(entries)],
    )
    if state != "delivered":
        log.warning("event %s on %s ended %s: %s %s", head.event_id, slot, state, reason,
                    error or (outcome.error if outcome else ""))


def _retry(
    ctx: FleetContext, token: str, head: Head, event: AlertEvent, destination: str,
    dedup_key: str, attempt: int, outcome: Outcome, attempt_entry: list[str],
) -> None:
    keys, settings = ctx.keys, ctx.settings
    slot = slot_of(destination, dedup_key)
    delay_ms = int(retry_delay(attempt, settings.retry_base_seconds,
                               settings.retry_cap_seconds) * 1000)
    fields = {
        "attempts": str(attempt), "last_attempt": str(head.now_ms),
        "last_status": str(outcome.http_status or ""), "last_error": outcome.error,
    }
    entries = [attempt_entry, timeline.entry(
        "retry_scheduled", head.event_id, event.action, destination, dedup_key,
        attempt=attempt, retry_at=head.now_ms + delay_ms, delay_ms=delay_ms,
    )]
    retention_ms = int(settings.timeline_retention_seconds * 1000)
    ctx.scripts.retry(
        keys=[keys.lease(slot), keys.schedule, keys.event(head.event_id),
              keys.timeline(event.incident_id), keys.hold(slot)],
        args=[token, slot, delay_ms, retention_ms, retention_ms, json.dumps(fields),
              json.dumps(entries)],
    )


def _release(ctx: FleetContext, token: str, slot: str, *, due_in_ms: int) -> None:
    keys = ctx.keys
    ctx.scripts.release(keys=[keys.lease(slot), keys.schedule], args=[token, slot, due_in_ms])
