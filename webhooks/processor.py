"""The processor: takes verified webhooks off the inbox stream and records what they mean.

Every `monitao-pd webhooks` process runs one, in a thread. They share the inbox through
one consumer group, so receiver replicas split the work; each entry is acknowledged (and
deleted) in the same atomic step that records it, and an entry left unacknowledged for
`claim_idle_seconds` (its processor died) is taken over with XAUTOCLAIM by another.

For one entry:

- not a webhook v3 event -> `invalid`, kept in the capped `webhook-unmatched` stream;
- a type that is not synced (`incident.triggered`, `pagey.ping`, ...) -> `ignored`;
- no MoniTao incident behind its dedup_key -> `unmatched`, kept in `webhook-unmatched`;
- no dedup_key at all (no `data.incident_key`, and no earlier webhook of its PagerDuty
  incident gave one): when a destination has REST credentials for the incident's service,
  the incident is looked up (`webhooks.lookups`; the answer is remembered) and matched by
  its incident_key; a lookup that cannot be made now leaves the entry pending: PagerDuty
  unavailable, retried like a failure below; the token's rate limit reached, retried
  likewise without using up an attempt (its delivery count set back); without credentials, or for an
  incident PagerDuty does not know, `unmatched` with the reason;
- else `matched`: MoniTao's callback is queued first (idempotent by PagerDuty's event
  id, so a re-run after a crash queues it once), then the timeline entry is written
  and the inbox entry acknowledged, atomically.

An entry whose processing raises stays pending and the processor goes on with the next
one; it is retried when it is taken over (its delivery count, kept by Redis, is the attempt
number). After `max_attempts` failures, or when it is taken over with its processor having
stopped that many times before recording it, it goes to `webhook-unmatched` as `failed` with
the reason: no entry holds up the others for longer than its attempts.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

import redis

from config import defaults
from config.idempotent import IdempotentScript
from config.keyspace import Keyspace
from config.settings import Settings
from webhooks.events import (
    NotAnEvent,
    WebhookEvent,
    incident_candidates,
    metric_type,
    parse,
    state_change,
    timeline_fields,
)
from webhooks.lookups import Found, IncidentLookup, LookupDeferred
from worker.metrics import record_webhook

try:
    from producer.callbacks import enqueue_state_change
except ImportError:  # the callback side is optional
    enqueue_state_change = None

log = logging.getLogger(__name__)

GROUP = "receivers"
# Kept of an unmatched or invalid body in the unmatched stream, for operators.
KEPT_BODY_CHARS = 8192
# How many timeline entries (newest first) are read to find the destination of a key.
DESTINATION_LOOKBACK = 200
# Kept of a failed entry's error in its reason.
KEPT_ERROR_CHARS = 500
# Errors that are Redis's, not the entry's: the entry stays pending, the loop backs off.
REDIS_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, OSError)

# KEYS: 1 timeline, 2 inbox, 3 pd-incident map   ARGV: 1 group, 2 inbox entry id,
#       3 timeline retention ms, 4 timeline entry (JSON list), 5 dedup_key, 6 map ttl ms
# Records one matched change and acknowledges its inbox entry in one step.
RECORD_MATCHED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[1], 'MINID', '~', tostring(now - tonumber(ARGV[3])), '*',
           unpack(cjson.decode(ARGV[4])))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[6]) end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
return 1
"""


class Processor:
    """Consumes the webhook inbox until `stop()`; `run()` is a thread's target."""

    def __init__(self, client: redis.Redis, settings: Settings, *,
                 consumer: str | None = None,
                 claim_idle_seconds: float = defaults.WEBHOOK_CLAIM_IDLE_SECONDS,
                 block_seconds: float = 1.0,
                 max_attempts: int = defaults.WEBHOOK_MAX_ATTEMPTS,
                 enqueue_change: Callable[..., str | None] | None = enqueue_state_change,
                 lookup: IncidentLookup | None = None,
                 ) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keyspace(settings.key_prefix)
        self.consumer = consumer or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        self.block_ms = max(1, int(block_seconds * 1000))
        self.max_attempts = max(1, max_attempts)
        self.enqueue_change = enqueue_change
        # REST lookups of incidents whose webhooks carry no incident_key
        self.lookup = lookup if lookup is not None else IncidentLookup(client, settings)
        self._record = IdempotentScript(client, RECORD_MATCHED, self.keys)
        self._stopping = threading.Event()
        self._claim_cursor = "0-0"

    def stop(self) -> None:
        """Ask `run()` to return after the entry in hand."""
        self._stopping.set()

    def ensure_group(self) -> None:
        """Create the inbox and its consumer group if they do not exist yet."""
        try:
            self.client.xgroup_create(self.keys.webhook_inbox, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(self) -> None:
        """Process entries until stopped; Redis errors are logged and retried with backoff."""
        delay = 0.1
        while not self._stopping.is_set():
            try:
                self.ensure_group()
                while not self._stopping.is_set():
                    self.step()
                    delay = 0.1
            except REDIS_UNAVAILABLE as exc:
                log.warning("webhooks: Redis unavailable (%s); retrying in %.1f s",
                            exc.__class__.__name__, delay)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):  # the inbox was deleted: recreate the group
                    log.exception("webhooks: Redis refused a command")
            except Exception:  # a bug outside any one entry must not end the thread
                log.exception("webhooks: processing failed")
            self._stopping.wait(delay)
            delay = min(delay * 2, 5.0)

    def step(self) -> int:
        """Take over abandoned entries, then read new ones (blocking up to `block_seconds`);
        process them; return how many were processed."""
        claimed = self._claim()
        if claimed:
            return self._process_all(claimed, self._deliveries(claimed))
        reply = self.client.xreadgroup(GROUP, self.consumer, {self.keys.webhook_inbox: ">"},
                                       count=50, block=self.block_ms)
        entries = reply[0][1] if reply else []
        return self._process_all(entries, {})

    def _claim(self) -> list[tuple[str, dict[str, str]]]:
        reply = self.client.xautoclaim(self.keys.webhook_inbox, GROUP, self.consumer,
                                       min_idle_time=self.claim_idle_ms,
                                       start_id=self._claim_cursor, count=50)
        self._claim_cursor = reply[0]
        entries = [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]
        if entries:
            log.info("webhooks: took over %d abandoned entries", len(entries))
        return entries

    def _deliveries(self, entries: list[tuple[str, dict[str, str]]]) -> dict[str, int]:
        """How many times each entry has been delivered to a processor (this one included)."""
        pipe = self.client.pipeline(transaction=False)
        for entry_id, _ in entries:
            pipe.xpending_range(self.keys.webhook_inbox, GROUP, min=entry_id, max=entry_id,
                                count=1)
        return {pending[0]["message_id"]: int(pending[0]["times_delivered"])
                for pending in pipe.execute() if pending}

    def _process_all(self, entries: list[tuple[str, dict[str, str]]],
                     deliveries: dict[str, int]) -> int:
        for entry_id, fields in entries:
            if self._stopping.is_set():
                break
            self.attempt(entry_id, fields, deliveries.get(entry_id, 1))
        return len(entries)

    def attempt(self, entry_id: str, fields: dict[str, str], delivery: int = 1) -> str:
        """Process one entry on its `delivery`-th delivery without letting it stop the
        others: a failure leaves it pending (`retrying`) until its last attempt, which moves
        it to the unmatched stream (`failed`). Redis being unavailable is raised."""
        if delivery > self.max_attempts:
            return self._give_up(entry_id, fields, (
                f"delivered to a processor {delivery - 1} times and neither recorded nor "
                "failed (the processor stopped each time)"))
        try:
            return self.process(entry_id, fields)
        except REDIS_UNAVAILABLE:
            raise
        except LookupDeferred as exc:  # expected: no traceback
            if not exc.counts:
                self._keep_attempts(entry_id, delivery)
                return "retrying"
            cause, expected = f"incident lookup deferred: {exc}"[:KEPT_ERROR_CHARS], True
        except Exception as exc:  # one entry's failure must not stop the others
            if isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc):
                raise  # the inbox was deleted: the loop recreates the group
            cause, expected = f"{exc.__class__.__name__}: {exc}"[:KEPT_ERROR_CHARS], False
        if delivery < self.max_attempts:
            log.warning("webhooks: inbox entry %s failed (attempt %d of %d), retried when "
                        "taken over in %.0f s: %s", entry_id, delivery, self.max_attempts,
                        self.claim_idle_ms / 1000, cause,
                        exc_info=delivery == 1 and not expected)
            return "retrying"
        return self._give_up(entry_id, fields, f"processing failed {delivery} times: {cause}")

    def _keep_attempts(self, entry_id: str, delivery: int) -> None:
        """Leave the entry pending as if this delivery had not happened (its delivery count
        set back), to be taken over again after the claim idle time."""
        self.client.xclaim(self.keys.webhook_inbox, GROUP, self.consumer, 0, [entry_id],
                           retrycount=delivery - 1, justid=True)

    def _give_up(self, entry_id: str, fields: dict[str, str], reason: str) -> str:
        body = fields.get("body", "")
        try:
            label = metric_type(parse(body).event_type)
        except Exception:  # noqa: BLE001 - whatever made it fail may be in the body
            label = "other"
        try:
            self._unmatched(entry_id, "failed", reason, fields.get("webhook_id", ""),
                            body=body)
        except REDIS_UNAVAILABLE:
            raise
        except Exception:  # kept pending; the next take-over tries again
            log.exception("webhooks: could not set aside inbox entry %s", entry_id)
            return "retrying"
        record_webhook(label, "failed")
        log.error("webhooks: inbox entry %s set aside in webhook-unmatched as failed: %s",
                  entry_id, reason)
        return "failed"

    def process(self, entry_id: str, fields: dict[str, str]) -> str:
        """Record one inbox entry and acknowledge it; return the result it was counted as."""
        body = fields.get("body", "")
        webhook_id = fields.get("webhook_id", "")
        try:
            event = parse(body)
        except NotAnEvent as exc:
            self._unmatched(entry_id, "invalid", str(exc), webhook_id, body=body)
            record_webhook("other", "invalid")
            return "invalid"
        label = metric_type(event.event_type)
        dedup_key = event.incident_key or self._known_key(event.pd_incident)
        looked_up: Found | None = None
        if dedup_key is None and event.synced and event.pd_incident:
            looked_up = self.lookup.incident_key(event.pd_incident, event.pd_service)
            dedup_key = looked_up.key if looked_up is not None else None
        match = self._match(dedup_key) if dedup_key else None
        if event.incident_key and match is None:
            self._learn(event, dedup_key)  # a later webhook without a key needs no lookup
        if not event.synced:
            if match:
                self._learn(event, dedup_key)
            self._ack(entry_id)
            record_webhook(label, "ignored")
            return "ignored"
        if match is None or dedup_key is None:
            reason = "no MoniTao incident has this dedup_key" if dedup_key else (
                looked_up.reason if looked_up is not None and looked_up.reason else
                "the event names no incident_key, its PagerDuty incident is not known, and "
                "no destination has REST credentials for its service to look it up")
            self._unmatched(entry_id, "unmatched", reason, webhook_id, event=event,
                            dedup_key=dedup_key or "")
            record_webhook(label, "unmatched")
            return "unmatched"
        monitor_id, incident_id = match
        if self.enqueue_change is not None:
            self.enqueue_change(self.client, self.settings, incident_id, dedup_key,
                                state_change(event, monitor_id, incident_id, dedup_key))
        destination = self._destination(incident_id, dedup_key)
        retention_ms = int(self.settings.timeline_retention_seconds * 1000)
        pd_key = self.keys.webhook_pd_incident(event.pd_incident) if event.pd_incident else ""
        self._record(
            keys=[self.keys.timeline(incident_id), self.keys.webhook_inbox, pd_key],
            args=[GROUP, entry_id, retention_ms,
                  json.dumps(timeline_fields(event, destination, dedup_key)), dedup_key,
                  retention_ms],
        )
        record_webhook(label, "matched")
        log.info("webhooks: %s of incident %s by %s (PagerDuty event %s)", event.event_type,
                 incident_id, event.agent or "PagerDuty", event.pd_event_id)
        return "matched"

    def _match(self, dedup_key: str) -> tuple[str, str] | None:
        """The (monitor_id, incident_id) behind `dedup_key` whose incident has a timeline."""
        candidates = incident_candidates(dedup_key)
        if not candidates:
            return None
        pipe = self.client.pipeline(transaction=False)
        for _, incident_id in candidates:
            pipe.exists(self.keys.timeline(incident_id))
        for candidate, exists in zip(candidates, pipe.execute(), strict=True):
            if exists:
                return candidate
        return None

    def _known_key(self, pd_incident: str) -> str | None:
        if not pd_incident:
            return None
        value = self.client.get(self.keys.webhook_pd_incident(pd_incident))
        return value or None

    def _learn(self, event: WebhookEvent, dedup_key: str | None) -> None:
        if event.pd_incident and dedup_key:
            self.client.set(self.keys.webhook_pd_incident(event.pd_incident), dedup_key,
                            px=int(self.settings.timeline_retention_seconds * 1000))

    def _destination(self, incident_id: str, dedup_key: str) -> str:
        """The destination that sent `dedup_key`, from the incident's newest entries."""
        recent = self.client.xrevrange(self.keys.timeline(incident_id),
                                       count=DESTINATION_LOOKBACK)
        for _, fields in recent:
            destination = fields.get("destination", "")
            if fields.get("dedup_key") == dedup_key and destination and \
                    not destination.startswith("@") and \
                    not fields.get("stage", "").startswith("pagerduty_"):
                return destination
        return ""

    def _unmatched(self, entry_id: str, result: str, reason: str, webhook_id: str, *,
                   event: WebhookEvent | None = None, dedup_key: str = "",
                   body: str = "") -> None:
        fields: dict[str, Any] = {"result": result, "reason": reason, "webhook_id": webhook_id}
        if event is not None:
            fields.update(event_type=event.event_type, pd_event_id=event.pd_event_id,
                          pd_incident=event.pd_incident, occurred_at=event.occurred_at,
                          agent=event.agent, dedup_key=dedup_key)
        if body:
            fields["body"] = body[:KEPT_BODY_CHARS]
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.keys.webhook_unmatched, {k: v for k, v in fields.items() if v},
                  maxlen=defaults.WEBHOOK_UNMATCHED_MAX, approximate=True)
        pipe.xack(self.keys.webhook_inbox, GROUP, entry_id)
        pipe.xdel(self.keys.webhook_inbox, entry_id)
        pipe.execute()

    def _ack(self, entry_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.keys.webhook_inbox, GROUP, entry_id)
        pipe.xdel(self.keys.webhook_inbox, entry_id)
        pipe.execute()
