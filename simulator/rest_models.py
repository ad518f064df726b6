"""PagerDuty REST API v2 shapes for the simulator: error bodies, input checks, resources.

Pure functions, no state and no I/O: `rest.py` keeps the records and calls these to check
what a client sent and to render what PagerDuty would answer.

Errors are PagerDuty's ``{"error": {"message", "code", "errors"?}}``: 400 ``Invalid Input
Provided`` (2001) naming each problem, 401 ``Unauthorized`` (2006), 404 ``Not Found``
(2100), 429 ``Rate Limit Exceeded`` (2020), 5xx ``Internal Server Error`` (2000).

The simulator's rules for maintenance windows (checked on create, and on the merged result of
an update): ``type`` is ``maintenance_window``; ``start_time`` and ``end_time`` are ISO 8601
date-times (without an offset: UTC); ``end_time`` after ``start_time`` and in the future;
``services`` a non-empty list of ``{"id", "type": "service_reference"}``; a service the
simulator does not know is a 400 like the rest (it is a fault of the body, not of the URL).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "API_ORIGIN",
    "RestError",
    "error_body",
    "format_time",
    "paginate",
    "parse_time",
    "service_reference",
    "subscription_input",
    "window_input",
]

# Where the resources' `self` and `html_url` point, as PagerDuty's answers do.
API_ORIGIN = "https://api.pagerduty.com"
WEB_ORIGIN = "https://simulated.pagerduty.com"
MESSAGES = {400: ("Invalid Input Provided", 2001), 401: ("Unauthorized", 2006),
            404: ("Not Found", 2100), 405: ("Method Not Allowed", 2001),
            429: ("Rate Limit Exceeded", 2020)}
DEFAULT_LIMIT = 25
MAX_LIMIT = 100
EVENT_TYPE = re.compile(r"^[a-z_]+\.[a-z_]+$")
FILTER_TYPES = ("service_reference", "account_reference")


class RestError(Exception):
    """A request PagerDuty would refuse: HTTP status and the problems to list."""

    def __init__(self, status: int, errors: list[str] | None = None) -> None:
        super().__init__(f"{status}: {'; '.join(errors or [])}")
        self.status = status
        self.errors = errors or []

    def body(self) -> dict[str, Any]:
        """PagerDuty's error object for this refusal."""
        return error_body(self.status, self.errors)


def error_body(status: int, errors: list[str] | None = None) -> dict[str, Any]:
    """``{"error": {"message", "code", "errors"?}}`` as PagerDuty answers `status`."""
    message, code = MESSAGES.get(status, ("Internal Server Error", 2000) if status >= 500
                                 else (f"Status {status} forced by the simulator", 2000))
    error: dict[str, Any] = {"message": message, "code": code}
    if errors:
        error["errors"] = list(errors)
    return {"error": error}


def parse_time(value: Any, name: str) -> datetime:
    """An aware datetime from an ISO 8601 string (naive means UTC); RestError(400) if not."""
    if not isinstance(value, str) or "T" not in value.upper():
        raise RestError(400, [f"{name} must be an ISO 8601 date and time"])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise RestError(400, [f"{name} must be an ISO 8601 date and time"]) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC, ``Z`` suffix, microseconds only when there are some."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def service_reference(service: dict[str, Any]) -> dict[str, Any]:
    """A ``service_reference`` to one of the simulator's services."""
    return {"id": service["id"], "type": "service_reference", "summary": service["name"],
            "self": f"{API_ORIGIN}/services/{service['id']}",
            "html_url": f"{WEB_ORIGIN}/service-directory/{service['id']}"}


def _wrapped(body: Any, name: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get(name), dict):
        raise RestError(400, [f"the body must be a JSON object with a '{name}' object"])
    fields: dict[str, Any] = body[name]
    if "type" in fields and fields["type"] != name:
        raise RestError(400, [f"{name}.type must be '{name}'"])
    return fields


def window_input(body: Any, services: dict[str, dict[str, Any]], now: datetime,
                 current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checked fields of a maintenance window: `current`'s (an update) overlaid with
    those of ``body["maintenance_window"]``; RestError(400) naming every problem."""
    fields = _wrapped(body, "maintenance_window")
    if current is None and fields.get("type") != "maintenance_window":
        raise RestError(400, ["maintenance_window.type must be 'maintenance_window'"])
    merged = dict(current or {})
    errors: list[str] = []
    for name in ("start_time", "end_time"):
        if name in fields:
            try:
                merged[name] = parse_time(fields[name], name)
            except RestError as exc:
                errors.extend(exc.errors)
        elif name not in merged:
            errors.append(f"{name} is required")
    if "description" in fields:
        if fields["description"] is not None and not isinstance(fields["description"], str):
            errors.append("description must be a string")
        else:
            merged["description"] = fields["description"] or ""
    merged.setdefault("description", "")
    if "services" in fields or current is None:
        merged["service_ids"] = _service_ids(fields.get("services"), services, errors)
    start, end = merged.get("start_time"), merged.get("end_time")
    if isinstance(start, datetime) and isinstance(end, datetime):
        if end <= start:
            errors.append("end_time must be after start_time")
        elif end <= now:
            errors.append("end_time must be in the future")
    if errors:
        raise RestError(400, errors)
    return merged


def _service_ids(value: Any, services: dict[str, dict[str, Any]], errors: list[str]) -> list[str]:
    if not isinstance(value, list) or not value:
        errors.append("services must be a non-empty list of service references")
        return []
    ids: list[str] = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            errors.append("each service must be an object with an 'id'")
        elif item.get("type", "service_reference") not in ("service_reference", "service"):
            errors.append(f"service {item['id']!r} must have type 'service_reference'")
        elif item["id"] not in services:
            errors.append(f"service {item['id']!r} not found")
        elif item["id"] not in ids:
            ids.append(item["id"])
    return ids


def subscription_input(body: Any, services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The checked fields of a new webhook subscription; RestError(400) naming problems."""
    fields = _wrapped(body, "webhook_subscription")
    errors: list[str] = []
    if fields.get("type") != "webhook_subscription":
        errors.append("webhook_subscription.type must be 'webhook_subscription'")
    method = fields.get("delivery_method")
    url = method.get("url") if isinstance(method, dict) else None
    if not isinstance(method, dict) or method.get("type") != "http_delivery_method":
        errors.append("delivery_method must be an object of type 'http_delivery_method'")
    elif not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
            or not urlsplit(url).hostname:
        errors.append("delivery_method.url must be an http(s) URL")
    events = fields.get("events")
    if not isinstance(events, list) or not events or not all(
            isinstance(e, str) and EVENT_TYPE.match(e) for e in events):
        errors.append("events must be a non-empty list of event types like "
                      "'incident.triggered'")
    flt = fields.get("filter")
    if not isinstance(flt, dict) or flt.get("type") not in FILTER_TYPES:
        errors.append(f"filter must be an object whose type is one of {list(FILTER_TYPES)}")
    elif flt["type"] == "service_reference" and flt.get("id") not in services:
        errors.append(f"filter service {flt.get('id')!r} not found")
    description = fields.get("description")
    if description is not None and not isinstance(description, str):
        errors.append("description must be a string")
    if errors:
        raise RestError(400, errors)
    assert isinstance(method, dict) and isinstance(flt, dict) and isinstance(events, list)
    return {"url": url, "events": list(dict.fromkeys(events)), "description": description,
            "filter": {"type": flt["type"], "id": flt.get("id")}}


def paginate(items: list[dict[str, Any]], name: str, query: dict[str, list[str]]
             ) -> dict[str, Any]:
    """A classic pagination page: ``{name: [...], offset, limit, more, total}``; ``total`` is
    null unless ``total=true`` was asked, as PagerDuty does."""
    try:
        offset = int(query.get("offset", ["0"])[-1])
        limit = int(query.get("limit", [str(DEFAULT_LIMIT)])[-1])
    except ValueError:
        raise RestError(400, ["offset and limit must be integers"]) from None
    if offset < 0 or limit < 1:
        raise RestError(400, ["offset must be 0 or more and limit 1 or more"])
    limit = min(limit, MAX_LIMIT)
    page = items[offset:offset + limit]
    wants_total = query.get("total", ["false"])[-1].lower() == "true"
    return {name: page, "offset": offset, "limit": limit,
            "more": offset + len(page) < len(items),
            "total": len(items) if wants_total else None}
