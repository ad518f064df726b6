"""Dead letters: events that ended `dead_lettered`, with the reason and PagerDuty's errors.

The set `keys.dead_letters` (event id -> when it was dead-lettered) holds them; each event's
hash holds the detail. A replayed dead letter stays in the set, state `pending`, until it is
delivered (the finish script removes it then); dead-lettered again, it stays. Purging and
superseding retire a dead letter atomically (`RETIRE`): only one still `dead_lettered`,
never one whose replay is on its way.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import SecretStr, ValidationError

from config import defaults
from config.destinations import Destination
from config.errors import AmbiguousIdError, ConflictError, InvalidInputError, NotFoundError
from config.idempotent import IdempotentScript
from config.keyspace import Keyspace, split_slot
from config.lookup import DestinationLookup
from config.settings import Settings
from config.text import MASK, mask_routing_keys, printable
from worker import paging, timeline

PAGE = 200
# Tables show ids shortened to 12 characters; any unique prefix this long names an event.
MIN_ID_PREFIX = 8
# How many of the ids an ambiguous prefix matches are named in the error.
AMBIGUOUS_SHOWN = 5
CURSOR_KIND = "dead-letters"

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


# KEYS: 1 event, 2 dead_letters   ARGV: 1 event_id, 2 raw, 3 origin, 4 errors (JSON list),
#       5 last_error, 6 incident_id, 7 action
# Files something that arrived but is not a valid event as an `invalid` dead letter, once:
# a second call for the same id (a redelivered entry) changes nothing. Returns 1 or 0.
INVALID = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'state', 'dead_lettered', 'reason', 'invalid', 'raw', ARGV[2],
           'origin', ARGV[3], 'errors', ARGV[4], 'last_error', ARGV[5], 'slot', '/',
           'attempts', 0, 'enqueued_at', now, 'finished_at', now)
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'incident_id', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'action', ARGV[7]) end
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Filters:
    """Which dead letters a command acts on; every given criterion must match."""

    destination: str | None = None
    reason: str | None = None
    since_ms: int | None = None  # dead-lettered at or after
    until_ms: int | None = None  # dead-lettered at or before

    def __post_init__(self) -> None:
        if self.since_ms is not None and self.until_ms is not None and (
                self.since_ms > self.until_ms):
            raise InvalidInputError(["since: is after until"])

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
    for _, letter in _scan(client, keys, filters or Filters()):
        yield letter


def _scan(
    client: redis.Redis, keys: Keyspace, filters: Filters, after: tuple[float, str] | None = None
) -> Iterator[tuple[tuple[float, str], dict[str, Any]]]:
    """(position, letter) of each matching dead letter after `after`, oldest first.

    A position is (score, event id): the set orders equal scores by id, so it is total.
    """
    low: float | str = "-inf" if filters.since_ms is None else filters.since_ms
    if after is not None:
        low = after[0] if filters.since_ms is None else max(after[0], filters.since_ms)
    high = "+inf" if filters.until_ms is None else filters.until_ms
    offset = 0
    while True:
        members = client.zrangebyscore(keys.dead_letters, low, high, start=offset, num=PAGE,
                                       withscores=True)
        if not members:
            return
        offset += len(members)
        members = [(event_id, score) for event_id, score in members
                   if after is None or (score, event_id) > after]
        pipe = client.pipeline(transaction=False)
        for event_id, _ in members:
            pipe.hgetall(keys.event(event_id))
        for (event_id, score), fields in zip(members, pipe.execute(), strict=True):
            if fields:
                letter = describe(event_id, fields)
                if filters.matches(letter):
                    yield (score, event_id), letter


def page(
    client: redis.Redis, keys: Keyspace, filters: Filters | None = None, *,
    cursor: str | None = None, limit: int = PAGE,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `iter_dead_letters` after `cursor`; the cursor of the next page, or None
    when this one is the last. Raises `InvalidInputError` for a cursor this never gave."""
    after = None
    if cursor is not None:
        score, event_id = paging.decode_cursor(cursor, CURSOR_KIND, 2)
        try:
            after = (float(score), event_id)
        except ValueError:
            raise paging.bad_cursor() from None
    found = list(itertools.islice(_scan(client, keys, filters or Filters(), after), limit + 1))
    letters = [letter for _, letter in found[:limit]]
    if len(found) <= limit:
        return letters, None
    score, event_id = found[limit - 1][0]
    return letters, paging.encode_cursor(CURSOR_KIND, repr(score), event_id)


def tally(letters: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many of `letters` there are per reason, most first (then by reason)."""
    found = Counter(letter["reason"] for letter in letters)
    return dict(sorted(found.items(), key=lambda item: (-item[1], item[0])))


def _glob_escaped(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def resolve_ids(client: redis.Redis, keys: Keyspace, given: Iterable[str]) -> list[str]:
    """The full event ids that `given` names, in order, each once.

    An id names itself when such an event exists; otherwise, with at least
    `MIN_ID_PREFIX` characters, the one dead letter whose id begins with it (as git takes
    a commit's prefix: tables show ids shortened). Raises `AmbiguousIdError` for a prefix
    of several dead letters, else `NotFoundError` naming every id that names nothing.
    """
    names = list(dict.fromkeys(given))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.exists(keys.event(name))
    resolved, unknown, ambiguous = [], [], []
    for name, exists in zip(names, pipe.execute(), strict=True):
        if exists:
            resolved.append(name)
            continue
        matches = _prefixed(client, keys, name) if len(name) >= MIN_ID_PREFIX else []
        if len(matches) == 1:
            resolved.append(matches[0])
        elif matches:
            shown = ", ".join(matches[:AMBIGUOUS_SHOWN]) + (
                ", ..." if len(matches) > AMBIGUOUS_SHOWN else "")
            ambiguous.append(f"{name!r} begins the ids of {len(matches)} dead letters "
                             f"({shown}): give more characters")
        else:
            unknown.append(name)
    if ambiguous:
        raise AmbiguousIdError(ambiguous)
    if unknown:
        raise NotFoundError("no event " + ", ".join(map(repr, unknown)))
    return list(dict.fromkeys(resolved))


def _prefixed(client: redis.Redis, keys: Keyspace, prefix: str) -> list[str]:
    # Operators' commands only: a walk over the dead letters, never a hot path.
    found = {member for member, _ in client.zscan_iter(
        keys.dead_letters, match=_glob_escaped(prefix) + "*", count=1000)}
    return sorted(found)


def check_selection(event_ids: Sequence[str], filters: Filters, everything: bool) -> None:
    """Refuse a selection of dead letters that names nothing, or ids as well as filters."""
    if not event_ids and not everything and filters == Filters():
        raise InvalidInputError(["selection: name event ids, give filters, or --all (all)"])
    if event_ids and (everything or filters != Filters()):
        raise InvalidInputError(["selection: give event ids or filters/--all (all), not both"])


def purge_candidates(
    client: redis.Redis, keys: Keyspace, *, event_ids: Sequence[str] = (),
    filters: Filters | None = None, everything: bool = False,
) -> list[dict[str, Any]]:
    """The dead letters a purge of this selection would retire, described.

    Named ids (or unique prefixes) must be dead letters (`NotFoundError` otherwise, naming
    each and its state); filters or `everything` select among them. Replays on their way
    are left out: a purge never takes back a replay.
    """
    filters = filters or Filters()
    check_selection(event_ids, filters, everything)
    if not event_ids:
        letters = list(iter_dead_letters(client, keys, filters))
    else:
        ids = resolve_ids(client, keys, event_ids)
        pipe = client.pipeline(transaction=False)
        for event_id in ids:
            pipe.hgetall(keys.event(event_id))
            pipe.zscore(keys.dead_letters, event_id)
        replies = pipe.execute()
        letters, refused = [], []
        for index, event_id in enumerate(ids):
            fields, score = replies[2 * index], replies[2 * index + 1]
            if not fields or score is None:
                refused.append(f"{event_id!r} is not a dead letter"
                               + (f" (state {fields.get('state')})" if fields else ""))
            else:
                letters.append(describe(event_id, fields))
        if refused:
            raise NotFoundError("; ".join(refused))
    return [letter for letter in letters if letter["state"] == "dead_lettered"]


def count(client: redis.Redis, keys: Keyspace) -> int:
    """How many events are in the dead letters (including replays on their way)."""
    return int(client.zcard(keys.dead_letters))


def counts_by_reason(
    client: redis.Redis, keys: Keyspace, filters: Filters | None = None
) -> dict[str, int]:
    """How many dead letters (still dead-lettered) there are per reason, most first."""
    return tally(letter for letter in iter_dead_letters(client, keys, filters)
                 if letter["state"] == "dead_lettered")


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

    `event_id` may be a unique prefix (`resolve_ids`). Raises `NotFoundError` when the
    event does not exist or is not a dead letter.
    """
    [event_id] = resolve_ids(client, keys, [event_id])
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


RAW_SHOWN = 4096


def shown_raw(raw: str) -> str:
    """A malformed record's raw bytes fit for a terminal: key-shaped tokens masked, then
    control characters and undecodable bytes escaped (`\\x1b`, `\\xff`), at most
    `RAW_SHOWN` characters."""
    text = printable(mask_routing_keys(raw))
    return text if len(text) <= RAW_SHOWN else text[:RAW_SHOWN] + f"... ({len(text)} chars)"


def retire(
    client: redis.Redis, keys: Keyspace, settings: Settings, event_id: str, state: str,
    entry: list[str], incident_id: str,
) -> str:
    """End a dead letter in `state` (purged, superseded) unless a replay took it first.

    Returns `state` when done, else the state found (`pending`, `missing`, ...).
    """
    retention_ms = int(settings.timeline_retention_seconds * 1000)
    return str(IdempotentScript(client, RETIRE, keys)(
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


def purge_selection(
    client: redis.Redis, keys: Keyspace, settings: Settings, *, event_ids: Sequence[str] = (),
    filters: Filters | None = None, everything: bool = False, operator: str = "",
) -> dict[str, str]:
    """Purge the dead letters this selection names (`purge_candidates`); event id ->
    outcome (`purged`, or the state found when a replay took it meanwhile)."""
    letters = purge_candidates(client, keys, event_ids=event_ids, filters=filters,
                               everything=everything)
    return purge(client, keys, settings, letters, operator=operator)


def purge_one(
    client: redis.Redis, keys: Keyspace, settings: Settings, event_id: str, *,
    operator: str = "",
) -> str:
    """Purge one dead letter (a full id or a unique prefix); return its full id.

    Raises `NotFoundError` when it is not a dead letter, `ConflictError` when a replay of it
    is on its way (or took it meanwhile).
    """
    [event_id] = resolve_ids(client, keys, [event_id])
    letters = purge_candidates(client, keys, event_ids=[event_id])
    outcome = purge(client, keys, settings, letters, operator=operator).get(event_id, "pending")
    if outcome != "purged":
        raise ConflictError(f"dead letter {event_id!r} cannot be purged: a replay of it is on "
                            f"its way (state {outcome})")
    return event_id


def record_invalid(
    client: redis.Redis, keys: Keyspace, event_id: str, raw: str, origin: str,
    problems: list[str], *, incident_id: str = "", action: str = "",
) -> bool:
    """File what arrived as an event but is not one as an `invalid` dead letter, with its
    raw text (at most `poison.MAX_RAW_CHARS`) and the problems; once per `event_id`.
    Returns whether this call filed it."""
    from worker.poison import as_text

    return bool(IdempotentScript(client, INVALID, keys)(
        keys=[keys.event(event_id), keys.dead_letters],
        args=[event_id, as_text(raw), origin, json.dumps(problems), "; ".join(problems)[:500],
              incident_id, action]))
