"""The Events API v2 body for one alert event: a pure function, no I/O."""

from __future__ import annotations

import json
from typing import Any

from config.destinations import Destination
from producer.event import AlertEvent

MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255
# PagerDuty refuses bodies over 512 KB; Alertmanager, like us, drops custom details first.
MAX_BODY_BYTES = 512_000
ELLIPSIS = "..."

SEED_FIELDS = (
    "monitor_name", "url", "status_code", "response_time_ms", "check_location", "incident_url",
)


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def custom_details(event: AlertEvent) -> dict[str, Any]:
    """What the responder sees: the event's free-form details under MoniTao's seed fields."""
    details: dict[str, Any] = dict(event.details)
    details.update({"monitor_id": event.monitor_id, "incident_id": event.incident_id})
    for name in SEED_FIELDS:
        value = getattr(event, name)
        if value is not None:
            details[name] = value
    return details


def build_event(event: AlertEvent, destination: Destination) -> dict[str, Any]:
    """The Events API v2 body that delivers `event` to `destination`.

    Triggers carry a payload, links and the client; acknowledge and resolve carry only
    what PagerDuty needs to find the alert. Raises KeyError if the event's level is not
    in the destination's severity map (the producer refuses such events).
    """
    body: dict[str, Any] = {
        "routing_key": destination.secret(),
        "event_action": event.action,
        "dedup_key": event.dedup_key[:MAX_DEDUP_KEY],
    }
    if event.action != "trigger":
        return body

    payload: dict[str, Any] = {
        "summary": truncate(event.summary or f"MoniTao monitor {event.monitor_id}", MAX_SUMMARY),
        "source": destination.source,
        "severity": destination.severity_for(event.level),
        "timestamp": event.occurred_at.isoformat(),
        "custom_details": custom_details(event),
    }
    if event.monitor_name:
        payload["component"] = event.monitor_name
    if event.check_location:
        payload["group"] = event.check_location
    body["payload"] = payload
    body["client"] = destination.client
    client_url = event.incident_url or destination.client_url
    if client_url:
        body["client_url"] = client_url
    if event.incident_url:
        body["links"] = [{"href": event.incident_url, "text": "MoniTao incident"}]

    if body_size(body) > MAX_BODY_BYTES:
        payload["custom_details"] = {
            "monitor_id": event.monitor_id,
            "incident_id": event.incident_id,
            "note": "details dropped: the event exceeded PagerDuty's 512 KB limit",
        }
    return body


def body_size(body: dict[str, Any]) -> int:
    """Bytes of `body` as it is sent."""
    return len(json.dumps(body, separators=(",", ":")).encode())
