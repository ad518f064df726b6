"""Dead letters: events that ended `dead_lettered`, with the reason and PagerDuty's errors.

The set `keys.dead_letters` (event id -> when it was dead-lettered) holds them; each event's
hash holds the detail. A replayed dead letter stays in the set, state `pending`, until it is
delivered (the finish script removes it then); dead-lettered again, it stays. Purging and
superseding retire a dead letter atomically (`RETIRE`): only one still `dead_lettered`,
never one whose replay is on its way.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import SecretStr, ValidationError

from config import defaults
from config.destinations import Destination
from config.errors import NotFoundError
from config.keyspace import Keyspace, split_slot
from config.lookup import DestinationLookup
from config.settings import Settings
from worker import timeline

PAGE = 200
# What `dlq show` prints in place of the routing key: fixed, so not even its length shows.
MASK = "********"

# KEYS: 1 event, 2 dead_letters, 3 timeline
# ARGV: 1 event_id, 2 new state, 3 event_ttl_ms, 4 timeline_retention_ms, 5 timeline_ttl_ms,
#       6 timeline entry (JSON list)
# Ends a dead letter in `new state` (purged, superseded) if it is still dead-lettered:
# a replay already on its way is left alone. Returns the new state, else the state found.
RETIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 'missing'
end
if state ~= 'dead_lettered' then return state end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'finished_at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MINID', '~', tostring(now - tonumber(ARGV[4])), '*',
           unpack(cjson.decode(ARGV[6])))
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return ARGV[2]
"""


@dataclass(frozen=True)
class Filters:
    """Which dead letters a command acts on; every given criterion must match."""

    destination: str | None = None
    reason: str | None = None
    since_ms: int | None = None  # dead-lettered at or after
    until_ms: int | None = None  # dead-lettered at or before

    def matches(self, letter: Mapping[str, Any]) -> bool:
        """Whether a described dead letter passes the destination and reason criteria."""
        if self.destination is not None and letter["destination"] != self.destination:
            return False
        return self.reason is None or letter["reason"] == self.reason


def _iso(millis: str | int | float | None) -> str | None:
    if millis in (None, ""):
        return None
    try:
        return datetime.fromtimestamp(float(millis) / 1000, UTC).isoformat(
            timespec="milliseconds")
    except (TypeError, ValueError, OverflowError):
        return None


def describe(event_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """One dead letter as shown by `dlq list`; tolerant of a malformed stored event."""
    destination, dedup_key = split_slot(fields.get("slot", "/"))
    try:
        errors = json.loads(fields["errors"]) if fields.get("errors") else []
    except ValueError:
        errors = [fields["errors"]]
    if not isinstance(errors, list):
        errors = [errors]
    state = fields.get("state") or "unknown"
    return {
        "event_id": event_id,
        "destination": destination,
        "dedup_key": dedup_key,
        "incident_id": fields.get("incident_id"),
        "action": fields.get("action"),
        "state": "replay_pending" if state == "pending" else state,
        "reason": fields.get("reason") or "unknown",
        "error": fields.get("last_error") or None,
        "errors": errors,
        "attempts": int(fields.get("attempts") or 0),
        "replays": int(fields.get("replays") or 0),
        "first_seen": _iso(fields.get("original_enqueued_at") or fields.get("enqueued_at")),
        "last_attempt": _iso(fields.get("last_attempt")),
        "dead_lettered_at": _iso(fields.get("finished_at")),
    }


def iter_dead_letters(
    client: redis.Redis, keys: Keyspace, filters: Filters | None = None
) -> Iterator[dict[str, Any]]:
    """Every dead letter matching `filters`, oldest first, read in pages."""
    filters = filters or Filters()
    low = "-inf" if filters.since_ms is None else filters.since_ms
    high = "+inf" if filters.until_ms is None else filters.until_ms
    offset = 0
    while True:
        ids = client.zrangebyscore(keys.dead_letters, low, high, start=offset, num=PAGE)
        if not ids:
            return
        pipe = client.pipeline(transaction=False)
        for event_id in ids:
            pipe.hgetall(keys.event(event_id))
        for event_id, fields in zip(ids, pipe.execute(), strict=True):
            if fields:
                letter = describe(event_id, fields)
                if filters.matches(letter):
                    yield letter
        offset += PAGE


def count(client: redis.Redis, keys: Keyspace) -> int:
    """How many events are in the dead letters (including replays on their way)."""
    return int(client.zcard(keys.dead_letters))


def counts_by_reason(
    client: redis.Redis, keys: Keyspace, filters: Filters | None = None
) -> dict[str, int]:
    """How many dead letters (still dead-lettered) there are per reason, most first."""
    found = Counter(letter["reason"] for letter in iter_dead_letters(client, keys, filters)
                    if letter["state"] == "dead_lettered")
    return dict(sorted(found.items(), key=lambda item: (-item[1], item[0])))


def masked_body(
    raw_event: str | None, destination: Destination | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The Events API body for a stored event, routing key masked; else None and why.

    Rebuilt from the stored event and the destination's current configuration (the body
    is not stored: it would hold the routing key). The real key is never read.
    """
    from producer.event import AlertEvent
    from worker.payload import build_event

    if raw_event is None:
        return None, "the event record holds no event"
    try:
        event = AlertEvent.from_json(raw_event)
    except ValidationError as exc:
        return None, f"the stored event cannot be decoded ({exc.error_count()} problems)"
    except ValueError as exc:  # not even text (bytes kept with surrogate escapes)
        return None, f"the stored event cannot be decoded ({type(exc).__name__})"
    if destination is None:
        return None, ("its destination is neither in the destinations file (MONITAO_PD_CONFIG) "
                      "nor in the registry")
    stand_in = destination.model_copy(update={"routing_key": SecretStr(MASK)})
    try:
        return build_event(event, stand_in), None
    except KeyError:
        return None, f"level {event.level!r} has no severity mapping in {destination.name!r}"


def show(
    client: redis.Redis, keys: Keyspace, event_id: str,
    destinations: Mapping[str, Destination] | DestinationLookup | None = None, *,
    retention_seconds: float | None = None,
) -> dict[str, Any]:
    """Everything about one dead letter: the event, the masked body, every attempt.

    Raises `NotFoundError` when the event does not exist or is not a dead letter.
    """
    fields = client.hgetall(keys.event(event_id))
    if not fields:
        raise NotFoundError(f"no event {event_id!r}")
    if client.zscore(keys.dead_letters, event_id) is None:
        raise NotFoundError(
            f"event {event_id!r} is not a dead letter (state {fields.get('state', 'unknown')})")
    letter = describe(event_id, fields)
    raw_event = fields.get("event")
    try:
        event: Any = json.loads(raw_event) if raw_event is not None else None
    except ValueError:
        event = {"undecodable": True, "length": len(raw_event or "")}
    destination = (destinations or {}).get(letter["destination"])
    if letter["destination"] == defaults.CALLBACK_DESTINATION:
        # a state change for MoniTao: sent as stored, signed, nothing secret in it
        body, why = (event, None) if isinstance(event, dict) else (None, "not a JSON object")
    else:
        body, why = masked_body(raw_event, destination)
    history = timeline.of_event(
        timeline.read(client, keys, letter["incident_id"] or "unknown",
                      retention_seconds=retention_seconds),
        event_id,
    ) if letter["incident_id"] else []
    return {
        **letter,
        "origin": fields.get("origin"),
        "raw": shown_raw(fields["raw"]) if fields.get("raw") is not None else None,
        "event": event,
        "body": body,
        "body_note": why or "rebuilt from the stored event and the current configuration; "
                           "routing key masked",
        "attempt_history": [e for e in history if e.get("stage") == "attempt"],
        "timeline": history,
    }


# Anything shaped like a routing key (32 letters and digits, some of them digits): a
# malformed message is shown as it came, but never with something that may be a secret.
KEY_SHAPED = re.compile(r"(?<![A-Za-z0-9])(?=[A-Za-z]*[0-9])[A-Za-z0-9]{32}(?![A-Za-z0-9])")
RAW_SHOWN = 4096


def shown_raw(raw: str) -> str:
    """A malformed record's raw bytes fit for a terminal: undecodable bytes as `\\xNN`,
    key-shaped tokens masked, at most `RAW_SHOWN` characters."""
    text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    text = KEY_SHAPED.sub(MASK, text)
    return text if len(text) <= RAW_SHOWN else text[:RAW_SHOWN] + f"... ({len(text)} chars)"


def retire(
    client: redis.Redis, keys: Keyspace, settings: Settings, event_id: str, state: str,
    entry: list[str], incident_id: str,
) -> str:
    """End a dead letter in `state` (purged, superseded) unless a replay took it first.

    Returns `state` when done, else the state found (`pending`, `missing`, ...).
    """
    retention_ms = int(settings.timeline_retention_seconds * 1000)
    return str(client.register_script(RETIRE)(
        keys=[keys.event(event_id), keys.dead_letters, keys.timeline(incident_id)],
        args=[event_id, state, int(settings.event_retention_seconds * 1000), retention_ms,
              retention_ms, json.dumps(entry)],
    ))


def purge(
    client: redis.Redis, keys: Keyspace, settings: Settings, letters: list[dict[str, Any]],
    *, operator: str = "",
) -> dict[str, str]:
    """Purge the given (described) dead letters; return event id -> outcome.

    A purged event keeps its record, state `purged`, for the event retention (so a resend
    of its id stays a no-op) and gets a `purged` timeline entry; it leaves the dead letters.
    """
    outcomes = {}
    for letter in letters:
        entry = timeline.entry("purged", letter["event_id"], letter["action"] or "unknown",
                               letter["destination"], letter["dedup_key"],
                               reason=letter["reason"], operator=operator)
        outcomes[letter["event_id"]] = retire(
            client, keys, settings, letter["event_id"], "purged", entry,
            letter["incident_id"] or "unknown")
    return outcomes
