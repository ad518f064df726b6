"""PagerDuty's webhooks v3, as the simulator sends them: signed, from background threads.

When one of the simulator's incidents changes state, `WebhookSender.send()` queues a
webhooks v3 body for each receiver that wants it: the configured one (`set_webhook`, every
body) and each webhook subscription made through the REST API (`POST
/webhook_subscriptions`: the bodies of its service, or of all with an account filter, whose
event type it lists). Each receiver has its own thread posting in order (PagerDuty delivers
in order per incident), signed with that receiver's secret as `X-PagerDuty-Signature:
v1=<hex HMAC-SHA256>` and identified by `X-Webhook-Id`, retrying 5xx, 429 and network
failures a few times with a short doubling pause (PagerDuty retries for up to 48 h; a test
has no time for that). `include_incident_key = False` sends bodies without
`data.incident_key`, as PagerDuty's older payloads do. Stdlib only.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = ["CONFIGURED", "WebhookSender", "webhook_body"]

# The service of incidents whose routing key no `Simulator.add_service` named.
DEFAULT_SERVICE_ID = "PSIMSVC"
DEFAULT_SERVICE_NAME = "Simulated service"
ATTEMPTS = 5
FIRST_PAUSE_SECONDS = 0.1
TIMEOUT_SECONDS = 5.0


def webhook_body(event_type: str, incident: dict[str, Any], agent: str | None,
                 event_id: str | None = None) -> dict[str, Any]:
    """A webhooks v3 body for one change of `incident` (the simulator's record)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"event": {
        "id": event_id or uuid.uuid4().hex.upper()[:26],
        "event_type": event_type,
        "resource_type": "incident",
        "occurred_at": now,
        "agent": {"id": "PSIMUSR", "summary": agent, "type": "user_reference"} if agent
        else None,
        "client": None,
        "data": {
            "id": incident["id"],
            "type": "incident",
            "self": f"https://api.pagerduty.com/incidents/{incident['id']}",
            "number": incident["number"],
            "status": incident["status"],
            "incident_key": incident["dedup_key"],
            "title": incident.get("summary", ""),
            "service": {"id": incident.get("service_id", DEFAULT_SERVICE_ID),
                        "summary": incident.get("service_name", DEFAULT_SERVICE_NAME),
                        "type": "service_reference",
                        "routing_key_hash": incident["routing_key_hash"]},
        },
    }}


CONFIGURED = "configured"


class _Target:
    """One receiver: where and how to sign, which bodies it wants, its own ordered queue."""

    def __init__(self, name: str, url: str | None, secret: str | None,
                 accepts: Callable[[dict[str, Any]], bool] | None) -> None:
        self.name, self.url, self.secret, self.accepts = name, url, secret, accepts
        self.active = True
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.thread: threading.Thread | None = None


class WebhookSender:
    """Posts webhook bodies to its receivers, each from a daemon thread of its own.

    The receiver named ``configured`` (`configure()`) gets every body; each subscription
    (`subscribe()`) gets the bodies its `accepts` predicate takes, signed with its own secret.
    A slow or failing receiver delays only its own deliveries."""

    def __init__(self, url: str | None = None, secret: str | None = None) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, _Target] = {CONFIGURED: _Target(CONFIGURED, url, secret, None)}
        self.include_incident_key = True
        self.deliveries: list[dict[str, Any]] = []

    def configure(self, url: str | None, secret: str | None) -> None:
        """Send every body to `url` signed with `secret` from now on (None: send nothing)."""
        with self._lock:
            target = self._targets[CONFIGURED]
            target.url, target.secret = url, secret

    def subscribe(self, name: str, url: str, secret: str,
                  accepts: Callable[[dict[str, Any]], bool]) -> None:
        """Also send the bodies `accepts` takes to `url`, signed with `secret`."""
        with self._lock:
            self._targets[name] = _Target(name, url, secret, accepts)

    def unsubscribe(self, name: str) -> None:
        """Stop sending to subscription `name`, bodies already queued for it included."""
        with self._lock:
            target = self._targets.pop(name, None)
        if target is not None:
            target.active = False
            target.queue.put(None)

    @property
    def enabled(self) -> bool:
        """Whether the configured receiver is set (subscriptions aside)."""
        with self._lock:
            target = self._targets[CONFIGURED]
            return bool(target.url and target.secret)

    def send(self, body: dict[str, Any]) -> None:
        """Queue one body for each receiver that wants it (none: dropped)."""
        with self._lock:
            if not self.include_incident_key:
                body = copy.deepcopy(body)
                body["event"]["data"].pop("incident_key", None)
            chosen = [t for t in self._targets.values() if t.url and t.secret
                      and (t.accepts is None or t.accepts(body))]
            for target in chosen:
                if target.thread is None:
                    target.thread = threading.Thread(
                        target=self._run, args=(target,), daemon=True,
                        name=f"simulator-webhooks-{target.name}")
                    target.thread.start()
                target.queue.put(body)

    def forget_subscriptions(self) -> None:
        """Drop every subscription, keeping the configured receiver."""
        with self._lock:
            names = [name for name in self._targets if name != CONFIGURED]
        for name in names:
            self.unsubscribe(name)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the threads after the bodies already queued have been tried."""
        with self._lock:
            threads = []
            for target in self._targets.values():
                if target.thread is not None:
                    threads.append(target.thread)
                    target.thread = None
                    target.queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def snapshot(self) -> list[dict[str, Any]]:
        """Every delivery tried: receiver (``configured`` or a subscription id), webhook id,
        event id and type, final status, attempts."""
        with self._lock:
            return [dict(d) for d in self.deliveries]

    def _run(self, target: _Target) -> None:
        while (body := target.queue.get()) is not None:
            if target.active:
                self._deliver(target, body)

    def _deliver(self, target: _Target, body: dict[str, Any]) -> None:
        with self._lock:
            url, secret = target.url, target.secret
        if not url or not secret:
            return
        raw = json.dumps(body).encode()
        signature = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        webhook_id = str(uuid.uuid4())
        record: dict[str, Any] = {"target": target.name, "webhook_id": webhook_id,
                                  "event_id": body["event"]["id"],
                                  "event_type": body["event"]["event_type"], "status": None,
                                  "attempts": 0}
        pause = FIRST_PAUSE_SECONDS
        for attempt in range(1, ATTEMPTS + 1):
            record["attempts"] = attempt
            request = urllib.request.Request(url, data=raw, method="POST", headers={
                "Content-Type": "application/json", "User-Agent": "PagerDuty-Webhook/V3.0",
                "X-PagerDuty-Signature": f"v1={signature}", "X-Webhook-Id": webhook_id,
            })
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
                    record["status"] = answer.status
            except urllib.error.HTTPError as exc:
                record["status"] = exc.code
            except OSError:
                record["status"] = None
            status = record["status"]
            if status is not None and status < 500 and status != 429:
                break  # delivered, or dropped like PagerDuty drops other 4xx
            if attempt == ATTEMPTS or not target.active:
                break
            time.sleep(pause)
            pause *= 2
        with self._lock:
            self.deliveries.append(record)
