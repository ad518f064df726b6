"""How an event is put on Redis: one Lua script per event, then the deliver task.

The script makes the idempotency check, the push onto the slot's mailbox, the timeline
entry and the schedule entry in one atomic step. Only a slot that was not scheduled yet
needs a task published; if the producer dies before publishing, the schedule entry comes
due and a worker's dispatcher publishes it instead.
"""

from __future__ import annotations

import json
import os

import redis

from config.keyspace import Keyspace, slot_of
from config.settings import Settings
from producer.event import AlertEvent

# Return codes of ENQUEUE.
DUPLICATE, PUBLISH, ALREADY_SCHEDULED = 0, 1, 2

# KEYS: event, mailbox, schedule, timeline
# ARGV: event_id, slot, event_json, claim_ms, timeline_retention_ms, timeline_ttl_ms,
#       timeline entry fields (JSON list), action, incident_id, call id
# The event keeps the call id and its answer (`enqueued_by`, `enqueue_reply`): redis-py
# sending this very call again after its reply was lost gets the first answer, not
# DUPLICATE, so the producer still publishes the task it must (instead of the incident
# waiting for the claim to end).
ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local memo = redis.call('HMGET', KEYS[1], 'enqueued_by', 'enqueue_reply')
  if memo[1] == ARGV[10] and memo[2] then return tonumber(memo[2]) end
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'event', ARGV[3], 'state', 'pending', 'slot', ARGV[2],
           'attempts', 0, 'enqueued_at', now, 'action', ARGV[8], 'incident_id', ARGV[9],
           'enqueued_by', ARGV[10])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[4], 'MINID', '~', tostring(now - tonumber(ARGV[5])), '*',
           unpack(cjson.decode(ARGV[7])))
redis.call('PEXPIRE', KEYS[4], ARGV[6])
local reply = 2
if redis.call('ZADD', KEYS[3], 'NX', now + tonumber(ARGV[4]), ARGV[2]) == 1 then reply = 1 end
redis.call('HSET', KEYS[1], 'enqueue_reply', reply)
return reply
"""


def enqueue_arguments(
    event: AlertEvent, destination: str, keys: Keyspace, settings: Settings
) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of ENQUEUE for one validated event bound to `destination`."""
    slot = slot_of(destination, event.dedup_key)
    entry = [
        "stage", "enqueued", "event_id", event.event_id, "action", event.action,
        "destination", destination, "dedup_key", event.dedup_key,
    ]
    retention_ms = int(settings.timeline_retention_seconds * 1000)
    return (
        [keys.event(event.event_id), keys.mailbox(slot), keys.schedule,
         keys.timeline(event.incident_id)],
        [event.event_id, slot, event.to_json(), int(settings.claim_seconds * 1000),
         retention_ms, retention_ms, json.dumps(entry), event.action, event.incident_id,
         os.urandom(12).hex()],
    )


def register_enqueue(client: redis.Redis) -> redis.commands.core.Script:
    """The ENQUEUE script registered on `client`."""
    return client.register_script(ENQUEUE)
