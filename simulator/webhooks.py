"""PagerDuty's webhooks v3, as the simulator sends them: signed, from a background thread.

When one of the simulator's incidents changes state, `WebhookSender.send()` queues a
webhooks v3 body for the configured receiver. One thread posts them in order (PagerDuty
delivers in order per incident), signed with `X-PagerDuty-Signature: v1=<hex HMAC-SHA256>`
and identified by `X-Webhook-Id`, retrying 5xx, 429 and network failures a few times with
a short doubling pause (PagerDuty retries for up to 48 h; a test has no time for that).
Stdlib only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import Any

__all__ = ["WebhookSender", "webhook_body"]

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
            "service": {"id": "PSIMSVC", "summary": "simulated service",
                        "type": "service_reference",
                        "routing_key_hash": incident["routing_key_hash"]},
        },
    }}


class WebhookSender:
    """Posts webhook bodies to one receiver from a daemon thread; reconfigurable."""

    def __init__(self, url: str | None = None, secret: str | None = None) -> None:
        self._lock = threading.Lock()
        self._url, self._secret = url, secret
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.deliveries: list[dict[str, Any]] = []

    def configure(self, url: str | None, secret: str | None) -> None:
        """Send to `url` signed with `secret` from now on (None: send nothing)."""
        with self._lock:
            self._url, self._secret = url, secret

    @property
    def enabled(self) -> bool:
        with self._lock:
            return bool(self._url and self._secret)

    def send(self, body: dict[str, Any]) -> None:
        """Queue one body (dropped when no receiver is configured)."""
        if not self.enabled:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="simulator-webhooks",
                                                daemon=True)
                self._thread.start()
        self._queue.put(body)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread after the bodies already queued have been tried."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every delivery tried: webhook id, event id and type, final status, attempts."""
        with self._lock:
            return [dict(d) for d in self.deliveries]

    def _run(self) -> None:
        while (body := self._queue.get()) is not None:
            self._deliver(body)

    def _deliver(self, body: dict[str, Any]) -> None:
        with self._lock:
            url, secret = self._url, self._secret
        if not url or not secret:
            return
        raw = json.dumps(body).encode()
        signature = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        webhook_id = str(uuid.uuid4())
        record: dict[str, Any] = {"webhook_id": webhook_id, "event_id": body["event"]["id"],
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
            if attempt < ATTEMPTS:
                time.sleep(pause)
                pause *= 2
        with self._lock:
            self.deliveries.append(record)
