"""The worker's atomic steps on Redis, as Lua scripts.

Each step that must not be split by a crash is one script: a worker that dies between two
scripts leaves every event either still in its mailbox or in a final state, never neither.
Times come from Redis's own clock (TIME), so workers on hosts with skewed clocks agree.

Timeline entries are passed as JSON lists of alternating field names and values; the
stream entry id carries the time.
"""

from __future__ import annotations

import redis

from worker.admission import ACCOUNT, GATE, GATE_FN, NOW

APPEND_TIMELINE = """
local function append_timeline(key, entries_json, retention_ms, ttl_ms)
  for _, entry in ipairs(cjson.decode(entries_json)) do
    redis.call('XADD', key, 'MINID', '~', tostring(now - retention_ms), '*', unpack(entry))
  end
  redis.call('PEXPIRE', key, ttl_ms)
end
"""

# Lua: `take_queued(queue, task)` pops the oldest message of a broker queue (a kombu list:
# LPUSH to publish, RPOP/BRPOP to consume) if it is a well-formed message of `task` that
# Celery could run at once, and returns {body, body_encoding}; anything else is put back
# where it was (nil). See worker/follow_ons.py.
TAKE_QUEUED_FN = """
local function take_queued(queue, task)
  local raw = redis.call('RPOP', queue)
  if not raw then return nil end
  local ok, message = pcall(cjson.decode, raw)
  if ok and type(message) == 'table' and type(message.body) == 'string' then
    local headers, properties = message.headers, message.properties
    if type(headers) == 'table' and headers.task == task
        and (headers.eta == nil or headers.eta == cjson.null)
        and (headers.expires == nil or headers.expires == cjson.null)
        and message['content-type'] == 'application/json' then
      local encoding = ''
      if type(properties) == 'table' and type(properties.body_encoding) == 'string' then
        encoding = properties.body_encoding
      end
      return {message.body, encoding}
    end
  end
  redis.call('RPUSH', queue, raw)
  return nil
end
"""

# KEYS: the broker queue   ARGV: the deliver task's name
TAKE_QUEUED = TAKE_QUEUED_FN + """
return take_queued(KEYS[1], ARGV[1])
"""

# KEYS: schedule   ARGV: claim_ms, limit
# Claims the slots due longest ago first, pushing each one's due time a claim period ahead
# so that no dispatcher publishes it again while its task waits in the queue.
CLAIM_DUE = NOW + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, slot in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), slot)
end
return due
"""

# KEYS: 1 lease, 2 schedule, 3 mailbox, 4 hold, 5 suppressed marker, 6 last sent action,
#       [7..12 circuit, circuit_wait, probe, cooldown, rate window, waiting room]
# ARGV: 1 token, 2 lease_ms, 3 slot, 4 event key prefix,
#       [5 timeline key prefix, 6 budget, 7 window_ms, 8 circuit threshold,
#        9 timeline retention ms, 10 timeline ttl ms, 11 destination, 12 dedup_key,
#        13 maximum event age ms, 14 claim_ms]
# Returns {-2} while the slot backs off, {-1} when another worker holds it, {0} when there
# is nothing to deliver (the slot leaves the schedule), else the lease is taken and the
# reply is TAKE_HEAD's for the head event: {1, now, event_id, field, value, ...}. Taking
# the head in the same script saves a round trip per pass (one per event in a storm).
# With the bracketed KEYS and ARGV (a destination the pass needs no more than the event to
# decide on: no maintenance window, no coalescing), a head event that is well formed,
# young enough and not a follow-up of a suppressed trigger also goes through the gate
# (admission.GATE_FN), whose reply is added as the fields `_gate`, `_gate_2`, `_gate_3`:
# a second round trip saved.
ACQUIRE = NOW + GATE_FN + """
local held = redis.call('PTTL', KEYS[4])
if held ~= -2 then
  -- backing off: due again the moment the hold ends (Redis keeps a key until just after)
  redis.call('ZADD', KEYS[2], now + math.max(held, 0) + 1, ARGV[3])
  return {-2}
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  -- a client retry of this very call finds its own token: carry on
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local id = redis.call('LINDEX', KEYS[3], 0)
if not id then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {0}
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
local suppressed = redis.call('EXISTS', KEYS[5])
local result = {1, now, id, '_suppressed', tostring(suppressed),
                '_last_sent', redis.call('GET', KEYS[6]) or ''}
local event = {}
local stored = redis.call('HGETALL', ARGV[4] .. id)
for i, v in ipairs(stored) do
  result[#result + 1] = v
  if i % 2 == 0 then event[stored[i - 1]] = v end
end
if KEYS[7] and suppressed == 0 and event.event and event.action and event.incident_id
    and tonumber(event.enqueued_at)
    and now - tonumber(event.enqueued_at) <= tonumber(ARGV[13]) then
  local base = cjson.encode({'event_id', id, 'action', event.action,
                             'destination', ARGV[11], 'dedup_key', ARGV[12]})
  local admitted = gate(
    {KEYS[1], KEYS[2], ARGV[5] .. event.incident_id, KEYS[7], KEYS[8], KEYS[9], KEYS[10],
     KEYS[11], KEYS[12], ARGV[4] .. id},
    {ARGV[1], ARGV[3], id, event.enqueued_at, ARGV[6], ARGV[7], ARGV[2], ARGV[8], ARGV[9],
     ARGV[10], base, ARGV[14]})
  for i, v in ipairs(admitted) do
    result[#result + 1] = i == 1 and '_gate' or '_gate_' .. i
    result[#result + 1] = tostring(v)
  end
end
return result
"""

# KEYS: lease, schedule, mailbox, suppressed marker, last sent action
# ARGV: token, lease_ms, slot, event key prefix
# Renews the lease and returns {1, now, event_id, field, value, ...} for the head event
# (with `_suppressed`: whether the slot's trigger was suppressed by maintenance, and
# `_last_sent`: the action of the slot's last event PagerDuty accepted),
# {0} when the mailbox is empty (the slot leaves the schedule and the lease is released),
# {-1} when the lease was lost.
TAKE_HEAD = NOW + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local id = redis.call('LINDEX', KEYS[3], 0)
if not id then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {0}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
local result = {1, now, id, '_suppressed', tostring(redis.call('EXISTS', KEYS[4])),
                '_last_sent', redis.call('GET', KEYS[5]) or ''}
for _, v in ipairs(redis.call('HGETALL', ARGV[4] .. id)) do result[#result + 1] = v end
return result
"""

# KEYS: 1 lease, 2 mailbox, 3 schedule, 4 event, 5 timeline, 6 dead_letters,
#       7..12 circuit, circuit_wait, probe, cooldown, circuit_log, rate window
#       (see admission.ACCOUNT), 13 suppressed marker, 14 last sent action,
#       [15 the broker queue, when it is on this Redis]
# ARGV: 1 token, 2 event_id, 3 slot, 4 state, 5 lease_ms, 6 event_ttl_ms,
#       7 timeline_retention_ms, 8 timeline_ttl_ms, 9 fields_json, 10 entries_json,
#       11 outcome, 12 account params (JSON), 13 action, 14 release when empty ('1' or ''),
#       [15 the deliver task's name: take the next queued message once released]
# Ends the head event in a final state: pops it (only if it is still the head), records
# the outcome and the timeline entries, files a dead letter, feeds the circuit. The event's
# `written_by` field names the pass (token) whose finish or retry wrote it last, so a
# client's retry of the same call is answered without being recorded twice. With
# ARGV[14], a mailbox left empty also ends the pass as TAKE_HEAD would (lease released,
# slot out of the schedule), which saves that round trip.
# Returns {events left, circuit transition, now, 1 if the lease was released else 0}, and
# with KEYS[15], once released, the body and body encoding of the queued deliver message
# it took (`take_queued`): a follow-on without a round trip of its own.
FINISH = NOW + APPEND_TIMELINE + ACCOUNT + TAKE_QUEUED_FN + """
if redis.call('HGET', KEYS[4], 'written_by') == 'finish ' .. ARGV[1]
    and redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then
  -- redis-py sending this very call again after its reply was lost: it already ran, so
  -- record nothing twice (timeline, circuit) and answer as it did, but for the queued
  -- message it may have taken (that one's slot comes back when its claim ends). An event
  -- at the head again was replayed from the dead letters since: it is finished anew.
  local left = redis.call('LLEN', KEYS[2])
  local released = 0
  if left == 0 and ARGV[14] == '1' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
    released = 1
  end
  return {left, '', now, released}
end
local fields = cjson.decode(ARGV[9])
for k, v in pairs(fields) do redis.call('HSET', KEYS[4], k, v) end
redis.call('HSET', KEYS[4], 'state', ARGV[4], 'finished_at', now,
           'written_by', 'finish ' .. ARGV[1])
if redis.call('LINDEX', KEYS[2], 0) == ARGV[2] then redis.call('LPOP', KEYS[2]) end
if ARGV[4] == 'dead_lettered' then
  redis.call('ZADD', KEYS[6], now, ARGV[2])
  redis.call('PERSIST', KEYS[4])
else
  redis.call('ZREM', KEYS[6], ARGV[2])
  redis.call('PEXPIRE', KEYS[4], ARGV[6])
end
append_timeline(KEYS[5], ARGV[10], tonumber(ARGV[7]), ARGV[8])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  -- the slot stays ours: lease and schedule move on together, so a crash from here is
  -- recovered when the lease ends, not when a later claim does
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('ZADD', KEYS[3], 'XX', now + tonumber(ARGV[5]), ARGV[3])
end
-- maintenance: follow-ups of a suppressed trigger are suppressed too, until a trigger of
-- the slot (or its resolve) goes through
-- (unless PagerDuty holds an open alert of the slot: its resolve must still go)
local open = redis.call('GET', KEYS[14])
open = open == 'trigger' or open == 'acknowledge'
if ARGV[4] == 'suppressed' and ARGV[13] == 'trigger' and not open then
  redis.call('SET', KEYS[13], '1', 'PX', ARGV[6])
elseif ARGV[13] == 'resolve' or (ARGV[4] == 'delivered' and ARGV[13] == 'trigger') then
  redis.call('DEL', KEYS[13])
end
-- what PagerDuty holds for the slot: kept while an alert is open, gone once resolved
if ARGV[4] == 'delivered' then
  if ARGV[13] == 'resolve' then
    redis.call('DEL', KEYS[14])
  else
    redis.call('SET', KEYS[14], ARGV[13], 'PX', 90 * 86400000)
  end
end
local health = account(ARGV[11], cjson.decode(ARGV[12]),
                       {KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[3], KEYS[11], KEYS[12]})
local left = redis.call('LLEN', KEYS[2])
local released = 0
if left == 0 and ARGV[14] == '1' and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[3], ARGV[3])
  released = 1
end
if released == 1 and KEYS[15] then
  local taken = take_queued(KEYS[15], ARGV[15])
  if taken then return {left, health[1], now, released, taken[1], taken[2]} end
end
return {left, health[1], now, released}
"""

# KEYS: 1 lease, 2 schedule, 3 event, 4 timeline, 5 hold,
#       6..11 circuit, circuit_wait, probe, cooldown, circuit_log, rate window
# ARGV: 1 token, 2 slot, 3 backoff_ms, 4 timeline_retention_ms, 5 timeline_ttl_ms,
#       6 fields_json, 7 entries_json, 8 outcome, 9 account params (JSON),
#       10 retry_scheduled entry base fields (JSON)
# Keeps the head event, records the attempt, and makes the whole slot wait: its own
# backoff, or longer while the circuit is open or the destination cools down after a 429.
# The hold stops any stray task for the slot; the schedule brings it back when due.
# Returns {delay_ms, circuit transition}.
RETRY = NOW + APPEND_TIMELINE + ACCOUNT + """
if redis.call('HGET', KEYS[3], 'written_by') == 'retry ' .. ARGV[1] then
  -- this very call sent again after its reply was lost (see FINISH): answer as it did
  return {math.max(1, redis.call('PTTL', KEYS[5])), ''}
end
local fields = cjson.decode(ARGV[6])
for k, v in pairs(fields) do redis.call('HSET', KEYS[3], k, v) end
redis.call('HSET', KEYS[3], 'written_by', 'retry ' .. ARGV[1])
local health = account(ARGV[8], cjson.decode(ARGV[9]),
                       {KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[2], KEYS[10], KEYS[11]})
local delay = math.max(1, tonumber(ARGV[3]))
local reason = 'backoff'
if health[2] > 0 then
  redis.call('SADD', KEYS[7], ARGV[2])
  redis.call('PEXPIRE', KEYS[7], 86400000)
  if health[2] - now > delay then delay = health[2] - now; reason = 'circuit_open' end
end
local cool = tonumber(redis.call('HGET', KEYS[9], 'until') or '0')
if cool - now > delay then delay = cool - now; reason = 'cooldown' end
local entry = cjson.decode(ARGV[10])
for _, v in ipairs({'retry_at', tostring(now + delay), 'delay_ms', tostring(delay),
                    'reason', reason}) do entry[#entry + 1] = v end
local entries = cjson.decode(ARGV[7])
entries[#entries + 1] = entry
append_timeline(KEYS[4], cjson.encode(entries), tonumber(ARGV[4]), ARGV[5])
redis.call('SET', KEYS[5], '1', 'PX', delay)
redis.call('ZADD', KEYS[2], now + delay, ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return {delay, health[1]}
"""

# KEYS: lease, schedule, timeline, [4 maintenance, 5 the window's held set]
# ARGV: token, slot, due_in_ms, timeline retention ms, timeline ttl ms, entry (JSON list),
#       [7 window id, 8 the window's JSON as the worker read it, 9 recheck ms]
# Gives the slot back until due_in_ms from now, recording why in the timeline (an event
# held for a maintenance window). With the bracketed KEYS and ARGV (a run-time window), the
# slot is held only if Redis still has that very window, and is recorded in its held set
# for `maintenance remove` to wake; a window removed or changed since the worker read it
# holds nothing: the slot is looked at again after recheck ms, when the worker's view is
# fresh. Returns 1 when held, 0 when not.
WAIT = NOW + APPEND_TIMELINE + """
local due_in = tonumber(ARGV[3])
local held = 1
if KEYS[4] then
  if redis.call('HGET', KEYS[4], ARGV[7]) == ARGV[8] then
    redis.call('SADD', KEYS[5], ARGV[2])
    if redis.call('PTTL', KEYS[5]) < due_in + 60000 then
      redis.call('PEXPIRE', KEYS[5], due_in + 60000)
    end
  else
    due_in, held = math.min(due_in, tonumber(ARGV[9])), 0
  end
end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZADD', KEYS[2], now + due_in, ARGV[2])
if held == 1 then append_timeline(KEYS[3], '[' .. ARGV[6] .. ']', tonumber(ARGV[4]), ARGV[5]) end
return held
"""

# KEYS: lease, schedule   ARGV: token, slot, due_in_ms
# Gives the slot back, due again after due_in_ms (0: at once, for another worker's turn).
RELEASE = NOW + """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
return 1
"""


class WorkerScripts:
    """The worker's Lua scripts, registered on one Redis client (EVALSHA, reloaded on need)."""

    def __init__(self, client: redis.Redis) -> None:
        self.claim_due = client.register_script(CLAIM_DUE)
        self.acquire = client.register_script(ACQUIRE)
        self.take_head = client.register_script(TAKE_HEAD)
        self.finish = client.register_script(FINISH)
        self.retry = client.register_script(RETRY)
        self.release = client.register_script(RELEASE)
        self.gate = client.register_script(GATE)
        self.wait = client.register_script(WAIT)
