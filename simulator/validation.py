"""Validation of Events API v2 request bodies, mirroring PagerDuty's rules and error shapes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

__all__ = [
    "EVENT_ACTIONS",
    "MAX_BODY_BYTES",
    "SEVERITIES",
    "InvalidEvent",
    "event_errors",
    "parse_event",
    "unrecognized",
]

MAX_BODY_BYTES = 512_000
ROUTING_KEY_LENGTH = 32
MAX_DEDUP_KEY_LENGTH = 255
MAX_SUMMARY_LENGTH = 1024
EVENT_ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")


class InvalidEvent(Exception):
    """A body PagerDuty would answer with 400; carries the response body's three fields."""

    def __init__(
        self, status: str, message: str, errors: list[str], parsed: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status}: {'; '.join(errors)}")
        self.status = status
        self.message = message
        self.errors = errors
        #: the body when it was a JSON object, so the request log can still name its fields
        self.parsed = parsed

    def body(self) -> dict[str, Any]:
        """The JSON object to send back with the 400."""
        return {"status": self.status, "message": self.message, "errors": self.errors}


def unrecognized() -> InvalidEvent:
    """The error PagerDuty gives for a body that is not a JSON object."""
    return InvalidEvent(
        "Unrecognized object", "Event object format is unrecognized", ["JSON parse error"]
    )


def parse_event(raw: bytes) -> dict[str, Any]:
    """Parse and validate a raw ``/v2/enqueue`` body; raise :class:`InvalidEvent` on any fault.

    Every broken rule is reported, not only the first, so a sender can fix them in one go.
    """
    errors: list[str] = []
    if len(raw) > MAX_BODY_BYTES:
        errors.append(f"request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        if errors:
            raise InvalidEvent("invalid event", "Event object is invalid", errors)
        raise unrecognized()
    errors.extend(event_errors(body))
    if errors:
        raise InvalidEvent("invalid event", "Event object is invalid", errors, body)
    return body


def event_errors(body: dict[str, Any]) -> list[str]:
    """Every rule the (already parsed) event object breaks, as human-readable strings."""
    errors: list[str] = []
    key = body.get("routing_key")
    if key is None:
        errors.append("'routing_key' is required")
    elif not isinstance(key, str):
        errors.append("'routing_key' must be a string")
    elif len(key) != ROUTING_KEY_LENGTH:
        errors.append(f"'routing_key' must be {ROUTING_KEY_LENGTH} characters")

    action = body.get("event_action")
    if action is None:
        errors.append("'event_action' is required")
    elif action not in EVENT_ACTIONS:
        errors.append(f"'event_action' must be one of {', '.join(EVENT_ACTIONS)}")

    dedup_key = body.get("dedup_key")
    if dedup_key is None:
        if action in ("acknowledge", "resolve"):
            errors.append(f"'dedup_key' is required for {action} events")
    elif not isinstance(dedup_key, str):
        errors.append("'dedup_key' must be a string")
    elif len(dedup_key) > MAX_DEDUP_KEY_LENGTH:
        errors.append(f"'dedup_key' is longer than {MAX_DEDUP_KEY_LENGTH} characters")

    if action == "trigger":
        errors.extend(_payload_errors(body.get("payload")))
    errors.extend(_list_errors(body, "images", "src", ("href", "alt"), https_only=True))
    errors.extend(_list_errors(body, "links", "href", ("text",), https_only=False))
    for name in ("client", "client_url"):
        if name in body and not isinstance(body[name], str):
            errors.append(f"'{name}' must be a string")
    return errors


def _payload_errors(payload: Any) -> list[str]:
    if payload is None:
        return ["'payload' is required for trigger events"]
    if not isinstance(payload, dict):
        return ["'payload' must be an object"]
    errors: list[str] = []
    summary = payload.get("summary")
    if summary is None:
        errors.append("'payload.summary' is required")
    elif not isinstance(summary, str):
        errors.append("'payload.summary' must be a string")
    elif not summary:
        errors.append("'payload.summary' must not be empty")
    elif len(summary) > MAX_SUMMARY_LENGTH:
        errors.append(f"'payload.summary' is longer than {MAX_SUMMARY_LENGTH} characters")

    source = payload.get("source")
    if source is None:
        errors.append("'payload.source' is required")
    elif not isinstance(source, str) or not source:
        errors.append("'payload.source' must be a non-empty string")

    severity = payload.get("severity")
    if severity is None:
        errors.append("'payload.severity' is required")
    elif severity not in SEVERITIES:
        errors.append(f"'payload.severity' must be one of {', '.join(SEVERITIES)}")

    if "timestamp" in payload and not _is_iso8601(payload["timestamp"]):
        errors.append("'payload.timestamp' must be an ISO 8601 date-time string")
    for name in ("component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            errors.append(f"'payload.{name}' must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        errors.append("'payload.custom_details' must be an object")
    return errors


def _list_errors(
    body: dict[str, Any], name: str, required: str, optional: tuple[str, ...], *, https_only: bool
) -> list[str]:
    if name not in body:
        return []
    items = body[name]
    if not isinstance(items, list):
        return [f"'{name}' must be an array"]
    errors: list[str] = []
    for index, item in enumerate(items):
        where = f"'{name}[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{where}' must be an object")
            continue
        value = item.get(required)
        if not isinstance(value, str):
            errors.append(f"{where}.{required}' is required and must be a string")
        elif https_only and not value.startswith("https://"):
            errors.append(f"{where}.{required}' must be an https:// URL")
        for field in optional:
            if field in item and not isinstance(item[field], str):
                errors.append(f"{where}.{field}' must be a string")
    return errors


def _is_iso8601(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True
