"""State-aware replay of dead letters: send them again, in order, unless that would be wrong.

For each dead letter the replay decides, from the incident's timeline and the slot's
mailbox, what sending it again would mean:

- **superseded** — a later event of the same (destination, dedup_key) was already
  delivered, or a later resolve ended otherwise (`superseded` by coalescing, `suppressed`
  by maintenance): PagerDuty holds newer state, or MoniTao closed the incident, and the old
  event would roll it back (a stale trigger would re-open an incident nobody resolves). It
  is ended `superseded`, leaves the dead letters and gets a `superseded` timeline entry,
  unless `force`.
- **history_expired** — the timeline no longer shows its key's history, so the above
  cannot be checked; skipped unless `force`.
- **already_pending** / **not_dead_lettered** — a replay is already on its way (replaying
  twice queues once), or the event is no longer a dead letter.
- otherwise it is **queued**: put back in its slot's mailbox *in production order*, that
  is just before the first pending event of its key that was produced after it (those
  wait behind it, as they would have), or at the tail when there is none. If that later
  event is being delivered right now, the replay waits for the attempt to end and decides
  again (the later event may then be delivered, which supersedes the replay).

Queueing is one script (`REPLAY`): it re-checks that the event is still dead-lettered,
that the mailbox is as planned and that no event of the key reached a final state since
the plan read the timeline (an attempt finishing between the two reads is seen by neither;
the script sees its timeline entry and the replay plans again), inserts the id, marks the
event `pending` with its age clock restarted (`enqueued_at` = now, the original kept in
`original_enqueued_at`, so `max_event_age_seconds` counts from the replay), appends a
`replayed` timeline entry, and schedules the slot due now (`ZADD NX`: a slot already
scheduled keeps its time, e.g. its backoff). A worker's dispatcher publishes the deliver
task within a dispatch interval.
The event leaves the dead letters only when it is delivered.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from config.errors import NotFoundError
from config.idempotent import IdempotentScript
from config.keyspace import Keyspace, slot_of, split_slot
from config.settings import Settings
from worker import dead_letters, timeline

# KEYS: 1 event, 2 mailbox, 3 schedule, 4 timeline, 5 lease
# ARGV: 1 event_id, 2 slot, 3 mailbox as planned (JSON list), 4 pivot ('' = the tail),
#       5 timeline_retention_ms, 6 timeline_ttl_ms, 7 timeline entry (JSON list),
#       8 the last timeline entry id the plan read, 9 destination, 10 dedup_key
# Returns {'queued', 1 if the slot was newly scheduled} or {'not_dead_lettered', state},
# {'missing'}, {'changed'} (the mailbox moved, or an event of the key reached a final
# state after the plan read the timeline: plan again), {'in_flight'} (the pivot is the
# head and a worker holds the slot: wait).
REPLAY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing'} end
if state ~= 'dead_lettered' then return {'not_dead_lettered', state} end
local planned = cjson.decode(ARGV[3])
local current = redis.call('LRANGE', KEYS[2], 0, -1)
if #current ~= #planned then return {'changed'} end
for i, id in ipairs(current) do
  if id ~= planned[i] then return {'changed'} end
end
local final = {delivered = 1, dead_lettered = 1, superseded = 1, suppressed = 1, purged = 1}
local since = redis.call('XRANGE', KEYS[4], '(' .. ARGV[8], '+', 'COUNT', 1000)
if #since == 1000 then return {'changed'} end
for _, item in ipairs(since) do
  local fields = {}
  for i = 1, #item[2], 2 do fields[item[2][i]] = item[2][i + 1] end
  if final[fields.stage] and fields.destination == ARGV[9]
      and fields.dedup_key == ARGV[10] then
    return {'changed'}
  end
end
local pivot = ARGV[4]
if pivot ~= '' and pivot == current[1] and redis.call('EXISTS', KEYS[5]) == 1 then
  return {'in_flight'}
end
if pivot == '' then
  redis.call('RPUSH', KEYS[2], ARGV[1])
else
  redis.call('LINSERT', KEYS[2], 'BEFORE', pivot, ARGV[1])
end
local enqueued = redis.call('HGET', KEYS[1], 'enqueued_at')
if enqueued then redis.call('HSETNX', KEYS[1], 'original_enqueued_at', enqueued) end
redis.call('HSET', KEYS[1], 'state', 'pending', 'enqueued_at', now, 'replayed_at', now)
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('HDEL', KEYS[1], 'finished_at')
redis.call('XADD', KEYS[4], 'MINID', '~', tostring(now - tonumber(ARGV[5])), '*',
           unpack(cjson.decode(ARGV[7])))
redis.call('PEXPIRE', KEYS[4], ARGV[6])
return {'queued', redis.call('ZADD', KEYS[3], 'NX', now, ARGV[2])}
"""

# How long one replay waits for an in-flight attempt of a later event of its key.
IN_FLIGHT_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.1


@dataclass
class Decision:
    """What the replay did (or, dry, would do) with one event, and why."""

    event_id: str
    outcome: str  # queued, superseded, skipped, unknown (dry: would_queue, would_supersede)
    reason: str = ""  # for skipped/superseded: a code (superseded, already_pending, ...)
    detail: str = ""  # a sentence for people
    destination: str = ""
    dedup_key: str = ""
    incident_id: str = ""
    action: str = ""
    later_pending: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Plan:
    outcome: str  # queue, supersede, skip
    reason: str = ""
    detail: str = ""
    mailbox: list[str] = field(default_factory=list)
    pivot: str = ""
    later_pending: list[str] = field(default_factory=list)
    read_up_to: str = "0-0"  # the last timeline entry the plan read


def operator_name() -> str:
    """Who ran the command, recorded on `replayed`, `superseded` and `purged` entries."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class Replayer:
    """Replays dead letters for one fleet (its Redis, keyspace and settings)."""

    def __init__(self, client: redis.Redis, settings: Settings, *, force: bool = False,
                 dry_run: bool = False, in_flight_wait: float = IN_FLIGHT_WAIT_SECONDS,
                 operator: str | None = None) -> None:
        self.client, self.settings = client, settings
        self.keys = Keyspace(settings.key_prefix)
        self.force, self.dry_run, self.in_flight_wait = force, dry_run, in_flight_wait
        self.operator = operator if operator is not None else operator_name()
        self._script = IdempotentScript(client, REPLAY, self.keys)

    def replay(self, event_ids: Iterable[str]) -> list[Decision]:
        """Replay the given events, each key's in production order; one decision each."""
        records: dict[str, dict[str, str]] = {}
        decisions: dict[str, Decision] = {}
        ids = list(dict.fromkeys(event_ids))
        pipe = self.client.pipeline(transaction=False)
        for event_id in ids:
            pipe.hgetall(self.keys.event(event_id))
        for event_id, fields in zip(ids, pipe.execute(), strict=True):
            if not fields:
                decisions[event_id] = Decision(event_id, "unknown", "unknown",
                                               "no such event")
            else:
                records[event_id] = fields

        def production_order(event_id: str) -> tuple[float, str]:
            fields = records[event_id]
            return (float(fields.get("original_enqueued_at") or fields.get("enqueued_at")
                          or 0), event_id)

        for event_id in sorted(records, key=production_order):
            decisions[event_id] = self._replay_one(event_id, records[event_id])
        return [decisions[event_id] for event_id in ids]

    def _replay_one(self, event_id: str, fields: dict[str, str]) -> Decision:
        destination, dedup_key = split_slot(fields.get("slot", "/"))
        decision = Decision(event_id, "skipped", destination=destination, dedup_key=dedup_key,
                            incident_id=fields.get("incident_id", ""),
                            action=fields.get("action", ""))
        deadline = time.monotonic() + self.in_flight_wait
        while True:
            plan = self._plan(event_id, fields, destination, dedup_key)
            decision.later_pending = plan.later_pending
            if plan.outcome == "skip":
                decision.reason, decision.detail = plan.reason, plan.detail
                return decision
            if plan.outcome == "supersede":
                return self._supersede(decision, plan)
            if self.dry_run:
                decision.outcome, decision.detail = "would_queue", plan.detail
                return decision
            result = self._queue(event_id, fields, decision, plan)
            if result[0] == "queued":
                decision.outcome, decision.detail = "queued", plan.detail
                return decision
            if result[0] in ("changed", "in_flight") and time.monotonic() < deadline:
                if result[0] == "in_flight":
                    time.sleep(POLL_SECONDS)
                fields = self.client.hgetall(self.keys.event(event_id)) or fields
                continue
            decision.reason = {"missing": "unknown"}.get(result[0], result[0])
            decision.detail = {
                "in_flight": "a later event of its key is still being delivered; try again",
                "changed": "its key's mailbox kept changing; try again",
                "missing": "the event record disappeared",
            }.get(result[0], f"state is {result[1] if len(result) > 1 else '?'}")
            if result[0] == "not_dead_lettered":
                decision.reason, decision.detail = self._not_dead(str(result[1]))
            return decision

    def _plan(self, event_id: str, fields: dict[str, str], destination: str,
              dedup_key: str) -> _Plan:
        state = fields.get("state", "")
        if state != "dead_lettered":
            reason, detail = self._not_dead(state)
            return _Plan("skip", reason, detail)
        if not destination or not dedup_key:
            return _Plan("skip", "malformed", "the event record names no destination/key")
        slot = slot_of(destination, dedup_key)
        entries = list(timeline.read(self.client, self.keys, fields.get("incident_id", ""),
                                     retention_seconds=self.settings.timeline_retention_seconds))
        mine = [e for e in entries
                if e.get("destination") == destination and e.get("dedup_key") == dedup_key]
        order = list(dict.fromkeys(e["event_id"] for e in mine if e.get("stage") == "enqueued"))
        read_up_to = entries[-1]["id"] if entries else "0-0"
        known = event_id in order
        if not known and not self.force:
            return _Plan("skip", "history_expired",
                         "its incident's timeline no longer shows its key's history, so a "
                         "later delivered event cannot be ruled out (--force to replay)",
                         read_up_to=read_up_to)
        position = order.index(event_id) if known else -1
        later = set(order[position + 1:]) if known else set()
        newer_state = [e for e in mine if e["event_id"] in later and closes(e)]
        if newer_state and not self.force:
            newest = newer_state[-1]
            how = "was delivered" if newest["stage"] == "delivered" else (
                f"ended {newest['stage']}, closing the incident")
            return _Plan("supersede", "superseded",
                         f"a later event of its key ({newest['event_id'][:12]}, "
                         f"{newest.get('action', '?')}) {how} at {newest['ts']}",
                         read_up_to=read_up_to)

        mailbox = self.client.lrange(self.keys.mailbox(slot), 0, -1)
        pipe = self.client.pipeline(transaction=False)
        for other in mailbox:
            pipe.hmget(self.keys.event(other), "original_enqueued_at", "enqueued_at")
        mine_at = float(fields.get("original_enqueued_at") or fields.get("enqueued_at") or 0)

        def produced_after(other: str, times: list[str | None]) -> bool:
            if known and other in order:
                return order.index(other) > position
            other_at = times[0] or times[1]
            return other_at is None or float(other_at) > mine_at

        later_pending = [other for other, times in zip(mailbox, pipe.execute(), strict=True)
                         if produced_after(other, times)]
        pivot = later_pending[0] if later_pending else ""
        if pivot:
            detail = (f"goes ahead of {len(later_pending)} later pending event(s) of its key, "
                      "which wait behind it (production order)")
            if pivot == mailbox[0] and self.client.exists(self.keys.lease(slot)):
                detail += "; waits for the attempt in flight on its key first"
        else:
            detail = "queued at the tail of its key" + (
                f" (behind {len(mailbox)} earlier event(s))" if mailbox else "")
        if self.force and (newer_state or not known):
            detail += "; forced: " + (
                "a later event of its key already ended the incident's state" if newer_state
                else "its key's history has expired")
        return _Plan("queue", detail=detail, mailbox=mailbox, pivot=pivot,
                     later_pending=later_pending, read_up_to=read_up_to)

    @staticmethod
    def _not_dead(state: str) -> tuple[str, str]:
        if state == "pending":
            return "already_pending", "a replay of it is already pending"
        return "not_dead_lettered", f"it is no longer a dead letter (state {state or '?'})"

    def _supersede(self, decision: Decision, plan: _Plan) -> Decision:
        decision.reason, decision.detail = plan.reason, plan.detail
        if self.dry_run:
            decision.outcome = "would_supersede"
            return decision
        entry = timeline.entry("superseded", decision.event_id, decision.action or "unknown",
                               decision.destination, decision.dedup_key, reason="superseded",
                               error=plan.detail, operator=self.operator)
        result = dead_letters.retire(self.client, self.keys, self.settings, decision.event_id,
                                     "superseded", entry, decision.incident_id or "unknown")
        if result == "superseded":
            decision.outcome = "superseded"
        else:
            decision.outcome = "skipped"
            decision.reason, decision.detail = self._not_dead(result)
        return decision

    def _queue(self, event_id: str, fields: dict[str, str], decision: Decision,
               plan: _Plan) -> list[Any]:
        keys = self.keys
        slot = slot_of(decision.destination, decision.dedup_key)
        retention_ms = int(self.settings.timeline_retention_seconds * 1000)
        entry = timeline.entry(
            "replayed", event_id, decision.action or "unknown", decision.destination,
            decision.dedup_key, reason=fields.get("reason"), operator=self.operator,
            forced="yes" if self.force else None,
            ahead_of=len(plan.later_pending) or None,
        )
        return list(self._script(
            keys=[keys.event(event_id), keys.mailbox(slot), keys.schedule,
                  keys.timeline(decision.incident_id or "unknown"), keys.lease(slot)],
            args=[event_id, slot, json.dumps(plan.mailbox), plan.pivot, retention_ms,
                  retention_ms, json.dumps(entry), plan.read_up_to, decision.destination,
                  decision.dedup_key],
        ))


def closes(entry: dict[str, Any]) -> bool:
    """Whether a timeline entry left PagerDuty with newer state than an earlier event of its
    key would give it: a delivered event, or a resolve that ended without being sent
    (superseded by coalescing, suppressed by maintenance): MoniTao closed the incident."""
    stage = entry.get("stage")
    return stage == "delivered" or (
        stage in ("superseded", "suppressed") and entry.get("action") == "resolve")


def select(client: redis.Redis, keys: Keyspace, filters: dead_letters.Filters) -> list[str]:
    """The ids of the dead letters matching `filters` (replays on their way included)."""
    return [letter["event_id"] for letter in dead_letters.iter_dead_letters(client, keys, filters)]


def require_known(decisions: list[Decision]) -> None:
    """Raise `NotFoundError` naming every unknown id among `decisions`."""
    unknown = [d.event_id for d in decisions if d.outcome == "unknown"]
    if unknown:
        raise NotFoundError("no such event: " + ", ".join(unknown))
