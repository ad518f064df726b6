"""The alert event MoniTao sends, validated before anything reaches Redis."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from config.errors import InvalidEventError
from config.text import printable

Action = Literal["trigger", "acknowledge", "resolve"]

ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
# Keeps the dedup_key "monitao-monitor-{m}-incident-{i}" within PagerDuty's 255 characters.
MAX_ID_LENGTH = 100
# A generous bound on free-form details, far below PagerDuty's 512 KB body limit.
MAX_DETAILS_BYTES = 64 * 1024
MAX_SUMMARY_LENGTH = 64 * 1024
# How deep `details` may nest objects and arrays (the object itself is level 1). The worker
# reads a stored event with pydantic's JSON parser, which gives up past 200 levels; real
# details are a few levels deep, and a low bound keeps far from that edge.
MAX_DETAILS_DEPTH = 32


class AlertEvent(BaseModel):
    """One MoniTao alert: a monitor's incident was triggered, acknowledged or resolved.

    `event_id` makes `send()` idempotent: sending an id that was already accepted is a
    no-op returning the same id. `destination` may be omitted when exactly one destination
    is configured.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    event_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=128, pattern=ID_PATTERN
    )
    destination: str | None = Field(None, min_length=1, max_length=64)
    action: Action
    monitor_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)
    incident_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)
    summary: str | None = Field(None, min_length=1, max_length=MAX_SUMMARY_LENGTH,
                                validate_default=True)
    level: str = Field("critical", min_length=1, max_length=64)
    monitor_name: str | None = Field(None, max_length=1024)
    url: str | None = Field(None, max_length=2048)
    status_code: int | None = Field(None, ge=0, le=999)
    response_time_ms: float | None = Field(None, ge=0)
    check_location: str | None = Field(None, max_length=255)
    incident_url: str | None = Field(None, max_length=2048, pattern=r"^https?://\S+$")
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("details", mode="before")
    @classmethod
    def _details_shallow(cls, value: object) -> object:
        # Before anything else walks it: json.dumps and the worker's parser recurse.
        if nesting_depth(value, MAX_DETAILS_DEPTH) > MAX_DETAILS_DEPTH:
            raise ValueError(f"nests deeper than {MAX_DETAILS_DEPTH} levels of objects and "
                             f"arrays (MAX_DETAILS_DEPTH), more than the worker can read")
        return value

    @field_validator("monitor_id", "incident_id", mode="before")
    @classmethod
    def _ids_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value

    @field_validator("details")
    @classmethod
    def _details_fit(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(json.dumps(value, separators=(",", ":")).encode())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be JSON-serialisable ({exc})") from None
        if size > MAX_DETAILS_BYTES:
            raise ValueError(f"is {size} bytes as JSON; at most {MAX_DETAILS_BYTES} allowed")
        return value

    @field_validator("summary", mode="after")
    @classmethod
    def _trigger_has_summary(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A field check (not a model check), so it is reported beside the other fields'
        # problems; `action` is validated first, being declared first.
        if value is None and info.data.get("action") == "trigger":
            raise ValueError("required for a trigger")
        return value

    @property
    def dedup_key(self) -> str:
        """PagerDuty's dedup_key: one per MoniTao incident of one monitor."""
        return f"monitao-monitor-{self.monitor_id}-incident-{self.incident_id}"

    def to_json(self) -> str:
        """The event as stored in Redis (no secret is part of an event)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> AlertEvent:
        """Decode a stored event; raises pydantic's ValidationError when malformed."""
        return cls.model_validate_json(raw)


def parse_event(data: AlertEvent | dict[str, Any]) -> AlertEvent:
    """Validate a mapping into an `AlertEvent`; raise `InvalidEventError` naming each field."""
    if isinstance(data, AlertEvent):
        return data
    if not isinstance(data, dict):
        raise InvalidEventError([f"event: must be a JSON object, got {type(data).__name__}"])
    try:
        return AlertEvent.model_validate(data)
    except ValidationError as exc:
        raise InvalidEventError(describe_event_errors(exc)) from None


def describe_event_errors(exc: ValidationError) -> list[str]:
    """One `field: reason (got value)` line per problem."""
    problems = []
    for error in exc.errors(include_url=False):
        field = printable(".".join(str(part) for part in error["loc"])) or "event"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        if ": " in message and field == "event":
            field, _, message = message.partition(": ")
        value = error.get("input")
        omitted = error["type"] == "missing" or (value is None and error["type"] == "value_error")
        shown = "" if isinstance(value, dict | list) or omitted else (
            f" (got {_short(value)})"
        )
        problems.append(f"{field}: {message}{shown}")
    return problems


def nesting_depth(value: object, limit: int) -> int:
    """How many levels of dicts and lists (or tuples) `value` nests, without recursion.

    Counting stops once past `limit`, so a self-referencing or absurdly deep value costs
    little. A scalar is 0 levels; `{}` is 1; `{"a": [1]}` is 2.
    """
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            break
        pending.extend((child, level + 1) for child in children)
    return deepest


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
