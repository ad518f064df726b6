"""An incident's delivery timeline: one Redis stream per MoniTao incident.

Entries are written inside the enqueue, delivery and replay scripts (so a timeline never
says more or less than what happened); this module shapes, reads and sums them up.

Retention is by age: the scripts trim entries older than `timeline_retention_seconds`
(approximately, with `XADD MINID ~`) and the whole stream expires that long after its last
entry; `read()` given the retention shows exactly the entries younger than it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from config.errors import NotFoundError
from config.keyspace import Keyspace
from worker import paging

STAGES = (
    "enqueued", "attempt", "rate_limited", "retry_scheduled", "delivered",
    "dead_lettered", "replayed", "superseded", "suppressed", "purged",
)
# Stages that end an event (until a replay brings a dead letter back).
FINAL_STAGES = ("delivered", "dead_lettered", "superseded", "suppressed", "purged")
# Fields stored as numbers; everything else stays text.
NUMERIC_FIELDS = {
    "attempt": int, "http_status": int, "latency_ms": float, "retry_at": int, "delay_ms": int,
}
PAGE = 500
CURSOR_KIND = "timeline"
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


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


def entry_millis(entry_id: str) -> int:
    """When an entry was written (epoch ms), from its stream id."""
    return int(entry_id.split("-", 1)[0])


def decode(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A stored entry as a dict with `ts` (ISO 8601, from the stream id) and typed fields."""
    millis = entry_millis(entry_id)
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


def redis_millis(client: redis.Redis) -> int:
    """Redis's clock (epoch ms): the scripts stamp entries with it, so cut-offs use it too."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def read(client: redis.Redis, keys: Keyspace, incident_id: str, *,
         retention_seconds: float | None = None) -> Iterator[dict[str, Any]]:
    """Every entry of an incident's timeline, oldest first, read in pages.

    With `retention_seconds`, entries older than that (by Redis's clock) are left out even
    if the approximate trim has not removed them yet.
    """
    key = keys.timeline(incident_id)
    start = "-"
    if retention_seconds is not None:
        start = str(max(0, redis_millis(client) - int(retention_seconds * 1000)))
    while True:
        page = client.xrange(key, min=start, max="+", count=PAGE)
        for entry_id, fields in page:
            yield decode(entry_id, fields)
        if len(page) < PAGE:
            return
        start = "(" + page[-1][0]


def incident_entries(client: redis.Redis, keys: Keyspace, incident_id: str, *,
                     retention_seconds: float | None = None) -> list[dict[str, Any]]:
    """Every entry of an incident's timeline (`read`); `NotFoundError` when it has none."""
    entries = list(read(client, keys, incident_id, retention_seconds=retention_seconds))
    if not entries:
        raise NotFoundError(f"no timeline for incident {incident_id!r}")
    return entries


def page(client: redis.Redis, keys: Keyspace, incident_id: str, *, cursor: str | None = None,
         limit: int = PAGE, retention_seconds: float | None = None,
         ) -> tuple[list[dict[str, Any]], str | None]:
    """One page of an incident's timeline after `cursor`, and the next page's cursor (None
    on the last). `NotFoundError` when the incident has no entries at all;
    `InvalidInputError` for a cursor this never gave."""
    key = keys.timeline(incident_id)
    oldest = 0
    if retention_seconds is not None:
        oldest = max(0, redis_millis(client) - int(retention_seconds * 1000))
    start = str(oldest)
    if cursor is not None:
        [after] = paging.decode_cursor(cursor, CURSOR_KIND, 1)
        if not STREAM_ID.match(after):
            raise paging.bad_cursor()
        if entry_millis(after) >= oldest:
            start = "(" + after
    found = client.xrange(key, min=start, max="+", count=limit + 1)
    if not found and (cursor is None or not client.exists(key)):
        raise NotFoundError(f"no timeline for incident {incident_id!r}")
    entries = [decode(entry_id, fields) for entry_id, fields in found[:limit]]
    if len(found) <= limit:
        return entries, None
    return entries, paging.encode_cursor(CURSOR_KIND, found[limit - 1][0])


def page_with_summary(
    client: redis.Redis, keys: Keyspace, incident_id: str, *, cursor: str | None = None,
    limit: int = PAGE, retention_seconds: float | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str | None]:
    """`page`, and with the first page (no cursor) the `summarize` figures of the whole
    timeline (None on later pages): what the API and the console show."""
    entries, next_cursor = page(client, keys, incident_id, cursor=cursor, limit=limit,
                                retention_seconds=retention_seconds)
    summary = None
    if cursor is None:
        whole = entries if next_cursor is None else incident_entries(
            client, keys, incident_id, retention_seconds=retention_seconds)
        summary = summarize(incident_id, whole)
    return entries, summary, next_cursor


def _figures(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and durations over some entries of one incident (all, or one key's)."""
    enqueued = [e for e in entries if e.get("stage") == "enqueued"]
    delivered = [e for e in entries if e.get("stage") == "delivered"]
    finals: dict[str, str] = {}
    for e in entries:
        if e.get("stage") in FINAL_STAGES:
            finals[e["event_id"]] = e["stage"]
        elif e.get("stage") in ("enqueued", "replayed"):
            finals[e["event_id"]] = "pending"
    states: dict[str, int] = {}
    for state in finals.values():
        states[state] = states.get(state, 0) + 1

    first_enqueued = entry_millis(enqueued[0]["id"]) if enqueued else None
    first_delivered = entry_millis(delivered[0]["id"]) if delivered else None
    trigger_at = resolve_at = None
    for e in delivered:
        if e.get("action") == "trigger" and trigger_at is None:
            trigger_at = entry_millis(e["id"])
        elif e.get("action") == "resolve" and trigger_at is not None and resolve_at is None:
            resolve_at = entry_millis(e["id"])
    return {
        "events": len(finals),
        "states": dict(sorted(states.items())),
        "attempts": sum(e.get("stage") == "attempt" for e in entries),
        "retries_scheduled": sum(e.get("stage") == "retry_scheduled" for e in entries),
        "rate_limited": sum(e.get("stage") == "rate_limited" for e in entries),
        "replayed": sum(e.get("stage") == "replayed" for e in entries),
        "first_enqueued": enqueued[0]["ts"] if enqueued else None,
        "enqueue_to_first_delivery_ms": (
            first_delivered - first_enqueued
            if first_delivered is not None and first_enqueued is not None else None
        ),
        "trigger_to_resolve_ms": (
            resolve_at - trigger_at if resolve_at is not None and trigger_at is not None
            else None
        ),
    }


def summarize(incident_id: str, entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Derived figures of one incident's timeline, overall and per (destination, dedup_key).

    - `enqueue_to_first_delivery_ms`: from the first event enqueued to the first delivered;
    - `attempts`: requests sent to PagerDuty (each `attempt` entry);
    - `trigger_to_resolve_ms`: from the first trigger delivered to the first resolve
      delivered after it (how long the PagerDuty incident stayed open), else None.
    """
    entries = list(entries)
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in entries:
        by_key.setdefault((e.get("destination", ""), e.get("dedup_key", "")), []).append(e)
    return {
        "incident_id": incident_id,
        "entries": len(entries),
        **_figures(entries),
        "keys": [
            {"destination": destination, "dedup_key": dedup_key, **_figures(key_entries)}
            for (destination, dedup_key), key_entries in by_key.items()
        ],
    }


def of_event(entries: Iterable[dict[str, Any]], event_id: str) -> list[dict[str, Any]]:
    """The entries of one event, oldest first."""
    return [e for e in entries if e.get("event_id") == event_id]
