"""One delivery pass over one slot (destination, dedup_key): the heart of the worker.

The pass leases the slot, then takes its events oldest first: ask the gate (circuit,
cooldown, rate window), build the body, post it, and finish each in one atomic script. A
retryable failure keeps the head event in place and makes the whole slot wait, so a
resolve can never overtake its trigger, while other slots go on. The pass returns as
soon as the slot is empty, waiting, or has had its turn.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from config import defaults
from config.destinations import Destination
from config.errors import UndecryptableError
from config.keyspace import endpoint_id, slot_of
from config.settings import redact_url
from producer.event import AlertEvent
from worker import metrics, timeline
from worker.admission import Admission, outcome_class
from worker.backoff import retry_delay
from worker.callback import callback_request
from worker.context import FleetContext
from worker.payload import build_event
from worker.sender import Outcome, open_connection, post_event, post_raw

log = logging.getLogger(__name__)


@dataclass
class PassReport:
    """What one pass did: how it ended and how many events reached a final state."""

    slot: str
    ended: str  # "empty", "waiting", "busy", "backing_off", "turn_over", "lease_lost"
    finished: int = 0
    # The deliver message the last finish script took off the queue ([body, encoding]):
    # the caller must make its pass (worker/follow_ons.py).
    taken: list[Any] | None = None


@dataclass(frozen=True)
class CallbackChange:
    """What the pass needs of a stored PagerDuty state change (see producer.callbacks)."""

    action: str
    incident_id: str


@dataclass(frozen=True)
class CallbackTarget:
    """MoniTao's callback endpoint, gated like a destination (circuit, budget)."""

    name: str
    url: str
    rate_limit_per_minute: int


@dataclass(frozen=True)
class Head:
    """The event at the head of a slot's mailbox, as stored."""

    event_id: str
    now_ms: int
    fields: dict[str, str]

    @classmethod
    def from_reply(cls, raw: list[Any]) -> Head:
        """From ACQUIRE's or TAKE_HEAD's reply {1, now, event_id, field, value, ...}."""
        return cls(raw[2], int(raw[1]), dict(zip(raw[3::2], raw[4::2], strict=True)))

    @property
    def admission(self) -> Admission | None:
        """The gate's answer when ACQUIRE passed the gate for this event too."""
        if "_gate" not in self.fields:
            return None
        return Admission.from_script(
            [self.fields["_gate"], self.fields["_gate_2"], self.fields["_gate_3"]])

    @property
    def attempts(self) -> int:
        return int(self.fields.get("attempts") or 0)

    @property
    def enqueued_at(self) -> int:
        return int(float(self.fields.get("enqueued_at") or self.now_ms))

    @property
    def age_ms(self) -> int:
        """How long the event has waited to be sent, not counting time a maintenance window
        held it (a held event is delivered after its window, however long)."""
        return self.now_ms - self.enqueued_at - int(float(self.fields.get("held_ms") or 0))

    @property
    def wait_until(self) -> int:
        """Until when (epoch ms) the event waits for an earlier request of its key that may
        still reach PagerDuty (0: it may go now)."""
        return int(self.fields.get("_wait_until") or 0)


def deliver_slot(
    ctx: FleetContext, destination: str, dedup_key: str, *, task_id: str | None = None,
    deadline: float | None = None, take_next: Callable[[], bool] | None = None,
) -> PassReport:
    """Deliver the pending events of one slot, in order, until it is empty or must wait.

    The pass takes no new event after `deadline` (a `time.monotonic()` reading; by default
    `pass_seconds` from now) and gives the slot back, due at once. When `take_next()` says
    so as the slot empties, its finish script also takes the next queued deliver message
    (returned in `PassReport.taken`).
    """
    return SlotPass(ctx, destination, dedup_key, task_id, deadline, take_next).run()


class SlotPass:
    """The state of one pass: the slot, the lease token, and the keys it touches."""

    def __init__(self, ctx: FleetContext, destination: str, dedup_key: str,
                 task_id: str | None, deadline: float | None = None,
                 take_next: Callable[[], bool] | None = None) -> None:
        self.ctx, self.settings, self.keys = ctx, ctx.settings, ctx.keys
        self.destination_name, self.dedup_key, self.task_id = destination, dedup_key, task_id
        self.slot = slot_of(destination, dedup_key)
        self.token = os.urandom(16).hex()
        self.lease_ms = int(self.settings.lease_seconds * 1000)
        self.retention_ms = int(self.settings.timeline_retention_seconds * 1000)
        # Set by a finish that released the lease because the mailbox was left empty.
        self.released = False
        self.take_next = take_next
        self.taken: list[Any] | None = None
        self.deadline = deadline if deadline is not None else (
            time.monotonic() + self.settings.pass_seconds)
        # An attempt's request may leave the worker until this long after the attempt began
        # (the transport's deadline), plus the margin the lease keeps over it.
        self.attempt_ms = int((self.settings.attempt_seconds
                               + defaults.ATTEMPT_MARGIN_SECONDS) * 1000)
        self.uncertain_ms = int(self.settings.uncertain_window_seconds * 1000)
        # The connection ACQUIRE's built-in gate is for, opened before it: (when the
        # attempt began, the connect failure if any).
        self.opened: tuple[float, Outcome | None] | None = None

    def run(self) -> PassReport:
        keys, slot = self.keys, self.slot
        # Leasing the slot also takes its head event: one round trip.
        gate_keys, gate_args = self._gate_with_acquire()
        raw = self.ctx.scripts.acquire(
            keys=[keys.lease(slot), keys.schedule, keys.mailbox(slot), keys.hold(slot),
                  keys.suppressed(slot), keys.last_sent(slot), keys.uncertain(slot),
                  *gate_keys],
            args=[self.token, self.lease_ms, slot, keys.event(""), self.attempt_ms,
                  self.uncertain_ms, *gate_args],
        )
        if raw[0] != 1:
            return PassReport(slot, {0: "empty", -1: "busy"}.get(raw[0], "backing_off"))

        report = PassReport(slot, "empty")
        try:
            while True:
                if not self._deliver(Head.from_reply(raw)):
                    report.ended = "waiting"
                    return report
                report.finished += 1
                if self.released:  # the finish script found the mailbox empty and ended
                    report.taken = self.taken
                    return report
                if time.monotonic() > self.deadline:
                    self._release(due_in_ms=0)
                    report.ended = "turn_over"
                    return report
                raw = self._take_head()
                if raw[0] != 1:
                    report.ended = "empty" if raw[0] == 0 else "lease_lost"
                    return report
        except Exception:
            # Leave the slot due again shortly; if Redis itself is gone, the lease expires
            # and the schedule brings the slot back all the same.
            log.exception("delivery pass for %s failed; the slot will be retried", slot)
            try:
                self._release(due_in_ms=int(self.settings.retry_base_seconds * 1000))
            except Exception:  # noqa: BLE001 - already failing; the lease TTL recovers it
                log.warning("could not release %s; its lease will expire", slot)
            raise

    def _gate_with_acquire(self) -> tuple[list[str], list[Any]]:
        """ACQUIRE's optional gate KEYS and ARGV: for a destination where the event itself
        decides nothing before the gate (configured, no coalescing, no maintenance window),
        the first event of the pass is admitted in the same round trip. The connection the
        request will go on is opened first: no gate is asked before it (worker/http_transport.py).
        """
        destination = self.ctx.destinations.get(self.destination_name)
        if destination is None or destination.coalesce or (
            self.ctx.maintenance.has_windows(self.destination_name)
        ):
            return [], []
        self.opened = self._open(destination.url)
        keys, settings, endpoint = self.keys, self.settings, endpoint_id(destination.url)
        return (
            [keys.circuit(endpoint), keys.circuit_waiting(endpoint),
             keys.circuit_probe(endpoint), keys.cooldown(destination.name),
             keys.rate_window(destination.name), keys.rate_waiting(destination.name)],
            [keys.timeline(""), destination.rate_limit_per_minute,
             int(settings.rate_window_seconds * 1000), settings.circuit_threshold,
             self.retention_ms, self.retention_ms, self.destination_name, self.dedup_key,
             int(settings.max_event_age_seconds * 1000), int(settings.claim_seconds * 1000)],
        )

    def _take_head(self) -> list[Any]:
        """TAKE_HEAD's reply for this slot: renew the lease, read the head event."""
        keys, slot = self.keys, self.slot
        return self.ctx.scripts.take_head(  # type: ignore[no-any-return]
            keys=[keys.lease(slot), keys.schedule, keys.mailbox(slot), keys.suppressed(slot),
                  keys.last_sent(slot), keys.uncertain(slot)],
            args=[self.token, self.lease_ms, slot, keys.event(""), self.attempt_ms,
                  self.uncertain_ms],
        )

    def _deliver(self, head: Head) -> bool:
        """Act on the head event; True when it reached a final state, False when it waits."""
        if self.destination_name == defaults.CALLBACK_DESTINATION:
            return self._deliver_callback(head)
        admission = head.admission
        if admission is not None and not admission.allowed:
            # the gate, run by ACQUIRE, has already given the slot back until its turn
            log.info("slot %s waits %d ms: %s", self.slot, admission.wait_ms, admission.reason)
            return False
        raw_event = head.fields.get("event")
        if raw_event is None:
            self._finish(head, None, "dead_lettered", reason="malformed",
                         error="event record is missing", raw=head.event_id)
            return True
        try:
            event = AlertEvent.from_json(raw_event)
        except ValidationError as exc:
            self._finish(head, None, "dead_lettered", reason="malformed",
                         error=f"cannot decode the stored event ({exc.error_count()} problems)")
            return True
        except ValueError as exc:  # bytes that are not even text (UnicodeEncodeError)
            self._finish(head, None, "dead_lettered", reason="malformed",
                         error=f"cannot decode the stored event ({type(exc).__name__})")
            return True

        if self._expired(head, event):
            return True
        destination = self.ctx.destinations.get(self.destination_name)
        if destination is None:
            if self.ctx.destinations.removed(self.destination_name):
                self._finish(head, event, "dead_lettered", reason="destination_removed",
                             error=f"destination {self.destination_name!r} was removed")
                return True
            self._finish(head, event, "dead_lettered", reason="unknown_destination",
                         error=f"destination {self.destination_name!r} is not configured")
            return True
        if head.wait_until > head.now_ms:
            return self._wait_for_uncertain(head, event)
        # Admitted by ACQUIRE: no window existed for the destination when the pass began.
        held = self._maintenance(head, event) if admission is None else None
        if held is not None:
            return held
        if destination.coalesce and event.action == "trigger" and not head.fields.get("sent") and (
            self._coalesce(head, event)
        ):
            return True
        try:
            body = build_event(event, destination)
        except KeyError:
            self._finish(head, event, "dead_lettered", reason="invalid",
                         error=f"level {event.level!r} has no severity mapping")
            return True
        except UndecryptableError as exc:
            # the key ring lacks the key (or the stored value was altered): replayable once
            # MONITAO_PD_SECRET_KEYS is fixed; the message names the key id, never the key
            self._finish(head, event, "dead_lettered", reason="undecryptable", error=str(exc))
            return True

        return self._attempt(head, event, destination, lambda deadline: post_event(
            self.ctx.poster(), destination.url, body, deadline=deadline))

    def _deliver_callback(self, head: Head) -> bool:
        """Deliver a PagerDuty state change to MoniTao's callback URL, signed."""
        settings = self.settings
        raw = head.fields.get("event")
        change = CallbackChange(head.fields.get("action") or "state_change",
                                head.fields.get("incident_id") or "unknown")
        if not settings.callback_url or settings.callback_secret is None:
            self._finish(head, change, "dead_lettered", reason="unknown_destination",
                         error="no callback URL is configured on this worker")
            return True
        try:
            valid = raw is not None and isinstance(json.loads(raw), dict)
        except ValueError:
            valid = False
        if not valid:
            self._finish(head, change, "dead_lettered", reason="malformed",
                         error="cannot decode the stored state change")
            return True
        if self._expired(head, change):
            return True
        if head.wait_until > head.now_ms:
            return self._wait_for_uncertain(head, change)
        target = CallbackTarget(self.destination_name, settings.callback_url,
                                settings.callback_rate_limit_per_minute)
        content, headers = callback_request(raw or "", head.event_id,
                                            settings.callback_secret.get_secret_value())
        return self._attempt(head, change, target, lambda deadline: post_raw(
            self.ctx.poster(), target.url, content, headers, deadline=deadline))

    def _expired(self, head: Head, event: AlertEvent | CallbackChange) -> bool:
        """Dead-letter an event too old to send; True when it was."""
        if head.age_ms <= self.settings.max_event_age_seconds * 1000:
            return False
        self._finish(head, event, "dead_lettered", reason="expired",
                     error=f"undelivered after {head.age_ms / 1000:.0f} s")
        return True

    def _wait_for_uncertain(self, head: Head, event: AlertEvent | CallbackChange) -> bool:
        """Give the slot back until an earlier request of another action, whose answer was
        lost, can no longer reach PagerDuty (so it cannot land after this event)."""
        wait_ms = head.wait_until - head.now_ms
        earlier = head.fields.get("_uncertain") or "request"
        entry = self._entry(
            "retry_scheduled", head.event_id, event.action, reason="uncertain_delivery",
            error=f"an earlier {earlier} of this key went out without an answer; waiting "
                  "until PagerDuty can no longer process it",
            retry_at=head.wait_until, delay_ms=wait_ms)
        self._give_back(head, event.incident_id, wait_ms, entry)
        log.info("slot %s waits %d ms for an earlier %s whose answer was lost", self.slot,
                 wait_ms, earlier)
        return False

    def _give_back(self, head: Head, incident_id: str, wait_ms: int, entry: list[str], *,
                   held: bool = False, window_keys: list[str] | None = None,
                   window_args: list[Any] | None = None) -> bool:
        """Give the slot back for `wait_ms`, recording `entry` in `incident_id`'s timeline
        (WAIT); `held`: a maintenance window holds the event. True when given back for it."""
        keys = self.keys
        return bool(self.ctx.scripts.wait(
            keys=[keys.lease(self.slot), keys.schedule, keys.timeline(incident_id),
                  keys.event(head.event_id), *(window_keys or [])],
            args=[self.token, self.slot, wait_ms, self.retention_ms, self.retention_ms,
                  json.dumps(entry), "1" if held else "", *(window_args or [])],
        ))

    def _open(self, url: str) -> tuple[float, Outcome | None]:
        """Open this thread's connection to `url` for an attempt that begins now; returns
        when it began and, if the connection failed, the failure as the attempt's outcome."""
        started = time.monotonic()
        return started, open_connection(self.ctx.poster(), url)

    def _attempt(self, head: Head, event: AlertEvent | CallbackChange,
                 destination: Destination | CallbackTarget,
                 send: Callable[[float], Outcome]) -> bool:
        """Open the connection, pass the gate, send within the attempt's deadline, and
        finish or schedule a retry; True when the event is final."""
        opened = self.opened if head.admission is not None and self.opened else None
        started, failed = opened or self._open(destination.url)
        self.opened = None
        admission = self._admit(head, event, destination)
        if not admission.allowed:
            return False
        # the lease was renewed after `started`, and outlasts the deadline by the margin
        outcome = failed or send(started + self.settings.attempt_seconds)
        metrics.record_attempt(self._metrics_label(), outcome.kind, outcome.latency_ms / 1000,
                               outcome.http_status)
        self.ctx.activity.attempt(self.destination_name, outcome.kind, outcome.http_status,
                                  head.now_ms)
        attempt = head.attempts + 1
        attempt_entry = self._entry(
            "attempt", head.event_id, event.action, attempt=attempt,
            http_status=outcome.http_status, latency_ms=outcome.latency_ms, error=outcome.error,
            worker=self.ctx.worker_name, task_id=self.task_id,
            probe="yes" if admission.probe else None,
            answer_lost="yes" if outcome.ambiguous else None,
        )
        # A delivered attempt at DEBUG: in a storm, one INFO line per alert cost about 4%
        # of a worker's CPU (py-spy), and the timeline records every attempt anyway.
        log.log(
            logging.DEBUG if outcome.kind == "delivered" else logging.INFO,
            "attempt %d event=%s slot=%s task=%s outcome=%s status=%s latency_ms=%.1f%s",
            attempt, head.event_id, self.slot, self.task_id, outcome.kind, outcome.http_status,
            outcome.latency_ms, f" error={outcome.error!r}" if outcome.error else "",
        )
        account = self._account_params(destination, outcome, admission)
        if outcome.kind == "retry":
            self._retry(head, event, attempt, outcome, attempt_entry, account)
            return False
        if outcome.kind == "delivered":
            self._finish(head, event, "delivered", attempt=attempt, outcome=outcome,
                         attempt_entry=attempt_entry, account=account, release_when_empty=True)
        else:
            reason = "rejected" if outcome.http_status == 400 else f"http_{outcome.http_status}"
            self._finish(head, event, "dead_lettered", reason=reason, error=outcome.error,
                         attempt=attempt, outcome=outcome, attempt_entry=attempt_entry,
                         account=account, release_when_empty=True)
        return True

    def _maintenance(self, head: Head, event: AlertEvent) -> bool | None:
        """Suppress or hold the event for a maintenance window; None when it may go on."""
        # PagerDuty holds an open alert of this key: its acknowledge and resolve must go,
        # window or not, or the incident it opened would never close
        follow_up_of_open = event.action != "trigger" and (
            head.fields.get("_last_sent") in ("trigger", "acknowledge"))
        if event.action != "trigger" and head.fields.get("_suppressed") == "1" and (
            not follow_up_of_open
        ):
            self._finish(head, event, "suppressed", reason="trigger_suppressed",
                         error="its trigger was suppressed by a maintenance window")
            return True
        governing = self.ctx.maintenance.governing(self.destination_name, event.monitor_id,
                                                   head.now_ms)
        if governing is None:
            return None
        window, until, stored = governing
        if window.mode == "suppress" and follow_up_of_open:
            return None
        if window.mode == "suppress":
            self._finish(head, event, "suppressed", reason="maintenance",
                         error=f"maintenance window {window.id} ({window.describe()})")
            return True
        wait_ms = max(1, int(until.timestamp() * 1000) - head.now_ms)
        entry = self._entry("retry_scheduled", head.event_id, event.action,
                            reason="maintenance", window=window.id,
                            retry_at=head.now_ms + wait_ms, delay_ms=wait_ms)
        keys = self.keys
        window_keys, window_args = ([], []) if stored is None else (
            [keys.maintenance, keys.maintenance_held(window.id)],
            [window.id, stored, int(self.settings.maintenance_cache_seconds * 1000) + 100])
        held = self._give_back(head, event.incident_id, wait_ms, entry, held=True,
                               window_keys=window_keys, window_args=window_args)
        if held:
            log.info("slot %s held until %s by maintenance window %s", self.slot,
                     until.isoformat(), window.id)
        else:
            log.info("slot %s not held: maintenance window %s changed since it was read",
                     self.slot, window.id)
        return False

    def _coalesce(self, head: Head, event: AlertEvent) -> bool:
        """Supersede an unsent trigger that later events of its key make pointless.

        A newer unsent trigger follows: only the newest details need sending. Its resolve
        follows before it was ever sent, and PagerDuty has no open alert for the key: the
        whole flap (trigger, acknowledge, resolve) is superseded and nobody is paged.
        Returns True when the head was superseded.
        """
        keys = self.keys
        following = self.ctx.redis.lrange(keys.mailbox(self.slot), 1, 50)
        last_sent = head.fields.get("_last_sent")
        if not following:
            return False
        pipe = self.ctx.redis.pipeline(transaction=False)
        for event_id in following:
            pipe.hget(keys.event(event_id), "action")
        actions = pipe.execute()
        if actions[0] == "trigger":
            self._finish(head, event, "superseded", reason="newer_trigger",
                         error=f"a newer trigger of the key follows ({following[0]})")
            return True
        if "resolve" not in actions or last_sent in ("trigger", "acknowledge"):
            return False
        flap = following[: actions.index("resolve") + 1]
        self._finish(head, event, "superseded", reason="flap",
                     error="resolved before it was sent: PagerDuty never saw the flap")
        for event_id in flap:
            self._supersede_follow_up(event_id)
        return True

    def _supersede_follow_up(self, event_id: str) -> None:
        """End a flap's acknowledge or resolve, now at the head, as superseded too."""
        raw = self._take_head()
        if raw[0] != 1 or raw[2] != event_id:
            return  # the lease was lost or the mailbox changed: the next pass decides
        head = Head.from_reply(raw)
        try:
            follow_up = AlertEvent.from_json(head.fields["event"])
        except (KeyError, ValueError):
            return
        self._finish(head, follow_up, "superseded", reason="flap",
                     error="its trigger was resolved before it was sent")

    def _admit(self, head: Head, event: AlertEvent | CallbackChange,
               destination: Destination | CallbackTarget) -> Admission:
        if head.admission is not None:
            return head.admission
        keys, endpoint = self.keys, endpoint_id(destination.url)
        base = self._entry("", head.event_id, event.action)[2:]
        raw = self.ctx.scripts.gate(
            keys=[keys.lease(self.slot), keys.schedule, keys.timeline(event.incident_id),
                  keys.circuit(endpoint), keys.circuit_waiting(endpoint),
                  keys.circuit_probe(endpoint), keys.cooldown(destination.name),
                  keys.rate_window(destination.name), keys.rate_waiting(destination.name),
                  keys.event(head.event_id)],
            args=[self.token, self.slot, head.event_id, head.enqueued_at,
                  destination.rate_limit_per_minute,
                  int(self.settings.rate_window_seconds * 1000), self.lease_ms,
                  self.settings.circuit_threshold, self.retention_ms, self.retention_ms,
                  json.dumps(base), int(self.settings.claim_seconds * 1000)],
        )
        admission = Admission.from_script(raw)
        if not admission.allowed:
            log.info("slot %s waits %d ms: %s", self.slot, admission.wait_ms, admission.reason)
        return admission

    def _account_params(self, destination: Destination | CallbackTarget, outcome: Outcome,
                        admission: Admission) -> tuple[list[str], list[str]]:
        """KEYS and ARGV tails that feed `admission.ACCOUNT` with this outcome."""
        keys, settings, endpoint = self.keys, self.settings, endpoint_id(destination.url)
        params = {
            "threshold": settings.circuit_threshold,
            "base_ms": int(settings.circuit_open_seconds * 1000),
            "cap_ms": int(settings.circuit_max_open_seconds * 1000),
            "cool_base_ms": int(settings.cooldown_base_seconds * 1000),
            "cool_cap_ms": int(settings.cooldown_max_seconds * 1000),
            "hold_prefix": keys.hold_prefix,
            "waking": keys.circuit_waking,
            "endpoint_id": endpoint,
            "endpoint": redact_url(destination.url),
            "probe": 1 if admission.probe else 0,
            "member": admission.window_member,
            "window_ms": int(settings.rate_window_seconds * 1000),
        }
        return (
            [keys.circuit(endpoint), keys.circuit_waiting(endpoint),
             keys.circuit_probe(endpoint), keys.cooldown(destination.name), keys.circuit_log,
             keys.rate_window(destination.name)],
            [outcome_class(outcome.kind, outcome.http_status, outcome.abandoned),
             json.dumps(params)],
        )

    def _entry(self, stage: str, event_id: str, action: str, **extra: object) -> list[str]:
        return timeline.entry(stage, event_id, action, self.destination_name, self.dedup_key,
                              **extra)

    def _finish(
        self, head: Head, event: AlertEvent | CallbackChange | None, state: str, *,
        reason: str = "",
        error: str = "", attempt: int | None = None, outcome: Outcome | None = None,
        attempt_entry: list[str] | None = None,
        account: tuple[list[str], list[str]] | None = None, raw: str | None = None,
        release_when_empty: bool = False,
    ) -> None:
        keys, settings, slot = self.keys, self.settings, self.slot
        action = event.action if event else head.fields.get("action", "unknown")
        fields: dict[str, Any] = {"reason": reason} if reason else {}
        if raw is not None:
            fields.update(raw=raw, slot=slot)
        if attempt is not None:
            fields.update(attempts=str(attempt), last_attempt=str(head.now_ms))
        if outcome is not None:
            fields.update(last_status=str(outcome.http_status or ""), last_error=outcome.error)
            if outcome.errors:
                fields["errors"] = json.dumps(outcome.errors)
        elif error:
            fields["last_error"] = error

        entries = [attempt_entry] if attempt_entry else []
        if state == "delivered":
            entries.append(self._entry("delivered", head.event_id, action,
                                       pd_dedup_key=outcome.dedup_key if outcome else None))
        else:
            entries.append(self._entry(
                state, head.event_id, action, reason=reason,
                error=error or (outcome.error if outcome else ""),
                errors=outcome.errors if outcome and outcome.errors else None,
            ))
        incident = event.incident_id if event else head.fields.get("incident_id", "unknown")
        account_keys, account_args = account or self._no_account(head)
        queue_keys, queue_args = self._take_next_params(release_when_empty)
        result = self.ctx.scripts.finish(
            keys=[keys.lease(slot), keys.mailbox(slot), keys.schedule, keys.event(head.event_id),
                  keys.timeline(incident), keys.dead_letters, *account_keys,
                  keys.suppressed(slot), keys.last_sent(slot), keys.uncertain(slot),
                  keys.hold(slot), *queue_keys],
            args=[self.token, head.event_id, slot, state, self.lease_ms,
                  int(settings.event_retention_seconds * 1000), self.retention_ms,
                  self.retention_ms, json.dumps(fields), json.dumps(entries), *account_args,
                  action, "1" if release_when_empty else "", self.uncertain_ms,
                  keys.event(""), *queue_args],
        )
        self.released = bool(int(result[3]))
        if len(result) > 4:
            self.taken = result[4:6]
        self._log_transition(result[1])
        metrics.record_final(self._metrics_label(), state, reason, head.enqueued_at,
                             int(result[2]))
        self.ctx.activity.final(self.destination_name, state, head.enqueued_at, int(result[2]))
        if state == "dead_lettered":
            log.warning("event %s on %s ended %s: %s %s", head.event_id, slot, state, reason,
                        error or (outcome.error if outcome else ""))

    def _take_next_params(self, release_when_empty: bool) -> tuple[list[str], list[str]]:
        """FINISH's optional queue key and task name: take the next deliver message too."""
        if not release_when_empty or self.take_next is None or not self.take_next():
            return [], []
        with_finish = self.ctx.follow_ons.with_finish
        if with_finish is None:
            return [], []
        queue, task = with_finish
        return [queue], [task]

    def _no_account(self, head: Head) -> tuple[list[str], list[str]]:
        """ACCOUNT's KEYS and ARGV when no request was sent: the circuit and cooldown are
        left alone, and an admission ACQUIRE gave the event is given back."""
        keys, admission = self.keys, head.admission
        destination = self.ctx.destinations.get(self.destination_name)
        if admission is None or not admission.allowed or destination is None:
            endpoint, params = "none", {"threshold": 1}
        else:
            endpoint = endpoint_id(destination.url)
            params = {"threshold": 1, "member": admission.window_member,
                      "probe": 1 if admission.probe else 0}
        return (
            [keys.circuit(endpoint), keys.circuit_waiting(endpoint),
             keys.circuit_probe(endpoint), keys.cooldown(self.destination_name),
             keys.circuit_log, keys.rate_window(self.destination_name)],
            ["none", json.dumps(params)],
        )

    def _retry(self, head: Head, event: AlertEvent | CallbackChange, attempt: int,
               outcome: Outcome,
               attempt_entry: list[str], account: tuple[list[str], list[str]]) -> None:
        keys, settings, slot = self.keys, self.settings, self.slot
        backoff_ms = int(retry_delay(attempt, settings.retry_base_seconds,
                                     settings.retry_cap_seconds) * 1000)
        fields = {
            "attempts": str(attempt), "last_attempt": str(head.now_ms),
            "last_status": str(outcome.http_status or ""), "last_error": outcome.error,
        }
        scheduled = self._entry("retry_scheduled", head.event_id, event.action, attempt=attempt)
        account_keys, account_args = account
        result = self.ctx.scripts.retry(
            keys=[keys.lease(slot), keys.schedule, keys.event(head.event_id),
                  keys.timeline(event.incident_id), keys.hold(slot), *account_keys,
                  keys.uncertain(slot)],
            args=[self.token, slot, backoff_ms, self.retention_ms, self.retention_ms,
                  json.dumps(fields), json.dumps([attempt_entry]), *account_args,
                  json.dumps(scheduled), "1" if outcome.ambiguous else "", event.action,
                  self.uncertain_ms],
        )
        self._log_transition(result[1])

    def _metrics_label(self) -> str:
        """The destination's label in metrics (aggregated past the configured number)."""
        return self.ctx.destinations.metrics_label(self.destination_name)

    def _log_transition(self, transition: str) -> None:
        if transition:
            level = logging.INFO if transition == "closed" else logging.WARNING
            log.log(level, "circuit for the endpoint of %s %s", self.destination_name, transition)

    def _release(self, *, due_in_ms: int) -> None:
        keys = self.keys
        self.ctx.scripts.release(keys=[keys.lease(self.slot), keys.schedule],
                                 args=[self.token, self.slot, due_in_ms])
