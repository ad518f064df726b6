"""An incident's delivery timeline: one Redis stream per MoniTao incident.

Entries are written inside the enqueue and delivery scripts (so a timeline never says
more or less than what happened); this module shapes and reads them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from config.keyspace import Keyspace

STAGES = (
    "enqueued", "attempt", "rate_limited", "retry_scheduled", "delivered",
    "dead_lettered", "replayed", "superseded", "suppressed",
)
# Fields stored as numbers; everything else stays text.
NUMERIC_FIELDS = {"attempt": int, "http_status": int, "latency_ms": float, "retry_at": int}
PAGE = 500


def entry(stage: str, event_id: str, action: str, destination: str, dedup_key: str,
          **extra: object) -> list[str]:
    """A timeline entry as the flat field/value list the scripts append."""
    fields = [
        "stage", stage, "event_id", event_id, "action", action,
        "destination", destination, "dedup_key", dedup_key,
    ]
    for name, value in extra.items():
        if value is None or value == "":
            continue
        fields += [name, value if isinstance(value, str) else json.dumps(value)]
    return fields


def decode(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A stored entry as a dict with `ts` (ISO 8601, from the stream id) and typed fields."""
    millis = int(entry_id.split("-", 1)[0])
    result: dict[str, Any] = {
        "ts": datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds"),
        "id": entry_id,
    }
    for name, value in fields.items():
        kind = NUMERIC_FIELDS.get(name)
        if kind is not None:
            try:
                result[name] = kind(float(value)) if kind is int else kind(value)
                continue
            except ValueError:
                pass
        if name == "errors":
            try:
                result[name] = json.loads(value)
                continue
            except ValueError:
                pass
        result[name] = value
    return result


def read(client: redis.Redis, keys: Keyspace, incident_id: str) -> Iterator[dict[str, Any]]:
    """Every entry of an incident's timeline, oldest first, read in pages."""
    key = keys.timeline(incident_id)
    start = "-"
    while True:
        page = client.xrange(key, min=start, max="+", count=PAGE)
        for entry_id, fields in page:
            yield decode(entry_id, fields)
        if len(page) < PAGE:
            return
        start = "(" + page[-1][0]
