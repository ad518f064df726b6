"""Dead letters: events that ended `dead_lettered`, with the reason and PagerDuty's errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from config.keyspace import Keyspace, split_slot

PAGE = 200


def _iso(millis: str | int | float | None) -> str | None:
    if millis in (None, ""):
        return None
    return datetime.fromtimestamp(float(millis) / 1000, UTC).isoformat(timespec="milliseconds")


def describe(event_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """One dead letter as shown by `dlq list`; tolerant of a malformed stored event."""
    destination, dedup_key = split_slot(fields.get("slot", "/"))
    try:
        errors = json.loads(fields["errors"]) if fields.get("errors") else []
    except ValueError:
        errors = [fields["errors"]]
    return {
        "event_id": event_id,
        "destination": destination,
        "dedup_key": dedup_key,
        "incident_id": fields.get("incident_id"),
        "action": fields.get("action"),
        "reason": fields.get("reason") or "unknown",
        "error": fields.get("last_error") or None,
        "errors": errors,
        "attempts": int(fields.get("attempts") or 0),
        "first_seen": _iso(fields.get("enqueued_at")),
        "last_attempt": _iso(fields.get("last_attempt")),
        "dead_lettered_at": _iso(fields.get("finished_at")),
    }


def iter_dead_letters(client: redis.Redis, keys: Keyspace) -> Iterator[dict[str, Any]]:
    """Every dead letter, oldest first, read in pages."""
    offset = 0
    while True:
        ids = client.zrange(keys.dead_letters, offset, offset + PAGE - 1)
        if not ids:
            return
        pipe = client.pipeline(transaction=False)
        for event_id in ids:
            pipe.hgetall(keys.event(event_id))
        for event_id, fields in zip(ids, pipe.execute(), strict=True):
            if fields:
                yield describe(event_id, fields)
        offset += PAGE


def count(client: redis.Redis, keys: Keyspace) -> int:
    """How many events are dead-lettered."""
    return int(client.zcard(keys.dead_letters))
