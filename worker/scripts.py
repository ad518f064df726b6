"""The worker's atomic steps on Redis, as Lua scripts.

Each step that must not be split by a crash is one script: a worker that dies between two
scripts leaves every event either still in its mailbox or in a final state, never neither.
Times come from Redis's own clock (TIME), so workers on hosts with skewed clocks agree.

Timeline entries are passed as JSON lists of alternating field names and values; the
stream entry id carries the time.
"""

from __future__ import annotations

import redis

from config.idempotent import IdempotentScript
from config.keyspace import Keyspace
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

# Lua: `uncertain(marker, action, sent_until, window_ms)`, with `now` in scope, records that
# a request of `action` for the slot may have reached PagerDuty without its answer coming
# back: it may leave a worker until `sent_until` (epoch ms) and be processed for `window_ms`
# after that. The slot's next event of another action waits until then (see `read_head`);
# a resolve delivered before `confirm_until` is sent once more (see FINISH). Events of a
# slot go one at a time and another action always waits for the marker first, so a marker
# of another action has run out when it is replaced.
UNCERTAIN_FN = """
local function uncertain(key, action, sent_until, window_ms)
  local till = sent_until + window_ms
  local m = redis.call('HMGET', key, 'action', 'sent_until', 'until')
  if m[1] == action then
    sent_until = math.max(sent_until, tonumber(m[2]) or 0)
    till = math.max(till, tonumber(m[3]) or 0)
  end
  redis.call('HSET', key, 'action', action, 'sent_until', sent_until, 'until', till,
             'confirm_until', till + window_ms)
  redis.call('PEXPIREAT', key, till + window_ms + 1000)
end
"""

# Lua: `read_head(event_key, marker, attempt_ms, window_ms, token)`, with `now` in scope: the
# head event's stored fields (flat list and table), after the bookkeeping due whenever a
# pass takes it: time it spent held by a maintenance window is added to `held_ms` (it does
# not age the event), and an attempt of an earlier pass that went out and never finished
# (`in_flight`, and the gate that let it go was another pass's: its worker died, or stalled
# past its lease) becomes the slot's uncertainty, since PagerDuty may still get it. Also
# returns until when the event must wait for an uncertain request (epoch ms, 0: it may go)
# and that request's action.
HEAD_FN = UNCERTAIN_FN + """
local function read_head(event_key, marker, attempt_ms, window_ms, token)
  local mark = redis.call('HMGET', event_key, 'held_at', 'in_flight', 'action', 'gate_by')
  if mark[1] then
    redis.call('HINCRBY', event_key, 'held_ms', math.max(0, now - (tonumber(mark[1]) or now)))
    redis.call('HDEL', event_key, 'held_at')
  end
  if mark[2] and mark[4] ~= token then
    if tonumber(mark[2]) then
      uncertain(marker, mark[3] or '', tonumber(mark[2]) + attempt_ms, window_ms)
    end
    redis.call('HDEL', event_key, 'in_flight')
  end
  local stored = redis.call('HGETALL', event_key)
  local event = {}
  for i = 1, #stored, 2 do event[stored[i]] = stored[i + 1] end
  local wait, m = 0, redis.call('HMGET', marker, 'action', 'sent_until', 'until')
  if m[1] then
    local till = tonumber(m[1] == event.action and m[2] or m[3]) or 0
    if till > now then wait = till end
  end
  return stored, event, wait, m[1] or ''
end
"""

# KEYS: 1 lease, 2 schedule, 3 mailbox, 4 hold, 5 suppressed marker, 6 last sent action,
#       7 uncertainty marker,
#       [8..13 circuit, circuit_wait, probe, cooldown, rate window, waiting room]
# ARGV: 1 token, 2 lease_ms, 3 slot, 4 event key prefix, 5 attempt ms (with its margin),
#       6 uncertainty window ms,
#       [7 timeline key prefix, 8 budget, 9 window_ms, 10 circuit threshold,
#        11 timeline retention ms, 12 timeline ttl ms, 13 destination, 14 dedup_key,
#        15 maximum event age ms, 16 claim_ms]
# Returns {-2} while the slot backs off, {-1} when another worker holds it, {0} when there
# is nothing to deliver (the slot leaves the schedule), else the lease is taken and the
# reply is TAKE_HEAD's for the head event: {1, now, event_id, field, value, ...}. Taking
# the head in the same script saves a round trip per pass (one per event in a storm).
# With the bracketed KEYS and ARGV (a destination the pass needs no more than the event to
# decide on: no maintenance window, no coalescing), a head event that is well formed,
# young enough, not a follow-up of a suppressed trigger and not waiting for an uncertain
# request also goes through the gate (admission.GATE_FN), whose reply is added as the
# fields `_gate`, `_gate_2`, `_gate_3`: a second round trip saved.
ACQUIRE = NOW + GATE_FN + HEAD_FN + """
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
local stored, event, wait, doubt = read_head(ARGV[4] .. id, KEYS[7], tonumber(ARGV[5]),
                                             tonumber(ARGV[6]), ARGV[1])
local result = {1, now, id, '_suppressed', tostring(suppressed),
                '_last_sent', redis.call('GET', KEYS[6]) or '',
                '_wait_until', tostring(wait), '_uncertain', doubt}
for _, v in ipairs(stored) do result[#result + 1] = v end
if KEYS[8] and suppressed == 0 and wait == 0 and event.event and event.action
    and event.incident_id and tonumber(event.enqueued_at)
    and now - tonumber(event.enqueued_at) - (tonumber(event.held_ms) or 0)
        <= tonumber(ARGV[15]) then
  local base = cjson.encode({'event_id', id, 'action', event.action,
                             'destination', ARGV[13], 'dedup_key', ARGV[14]})
  local admitted = gate(
    {KEYS[1], KEYS[2], ARGV[7] .. event.incident_id, KEYS[8], KEYS[9], KEYS[10], KEYS[11],
     KEYS[12], KEYS[13], ARGV[4] .. id},
    {ARGV[1], ARGV[3], id, event.enqueued_at, ARGV[8], ARGV[9], ARGV[2], ARGV[10], ARGV[11],
     ARGV[12], base, ARGV[16]})
  for i, v in ipairs(admitted) do
    result[#result + 1] = i == 1 and '_gate' or '_gate_' .. i
    result[#result + 1] = tostring(v)
  end
end
return result
"""

# KEYS: lease, schedule, mailbox, suppressed marker, last sent action, uncertainty marker
# ARGV: token, lease_ms, slot, event key prefix, attempt ms (with its margin),
#       uncertainty window ms
# Renews the lease and returns {1, now, event_id, field, value, ...} for the head event
# (with `_suppressed`: whether the slot's trigger was suppressed by maintenance,
# `_last_sent`: the action of the slot's last event PagerDuty accepted, `_wait_until` and
# `_uncertain`: see `read_head`), {0} when the mailbox is empty (the slot leaves the
# schedule and the lease is released), {-1} when the lease was lost.
TAKE_HEAD = NOW + HEAD_FN + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local id = redis.call('LINDEX', KEYS[3], 0)
if not id then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {0}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
local stored, _, wait, doubt = read_head(ARGV[4] .. id, KEYS[6], tonumber(ARGV[5]),
                                         tonumber(ARGV[6]), ARGV[1])
local result = {1, now, id, '_suppressed', tostring(redis.call('EXISTS', KEYS[4])),
                '_last_sent', redis.call('GET', KEYS[5]) or '',
                '_wait_until', tostring(wait), '_uncertain', doubt}
for _, v in ipairs(stored) do result[#result + 1] = v end
return result
"""

# KEYS: 1 lease, 2 mailbox, 3 schedule, 4 event, 5 timeline, 6 dead_letters,
#       7..12 circuit, circuit_wait, probe, cooldown, circuit_log, rate window
#       (see admission.ACCOUNT), 13 suppressed marker, 14 last sent action,
#       15 uncertainty marker, 16 hold,
#       [17 the broker queue, when it is on this Redis]
# ARGV: 1 token, 2 event_id, 3 slot, 4 state, 5 lease_ms, 6 event_ttl_ms,
#       7 timeline_retention_ms, 8 timeline_ttl_ms, 9 fields_json, 10 entries_json,
#       11 outcome, 12 account params (JSON), 13 action, 14 release when empty ('1' or ''),
#       15 uncertainty window ms, 16 event key prefix,
#       [17 the deliver task's name: take the next queued message once released]
# Ends the head event in a final state: pops it (only if it is still the head), records
# the outcome and the timeline entries, files a dead letter, feeds the circuit. The event's
# `written_by` field names the pass (token) whose finish or retry wrote it last, so a
# client's retry of the same call is answered as the first run was (`finish_reply`),
# without recording anything twice. With ARGV[14], a mailbox left empty also ends the pass
# as TAKE_HEAD would (lease released, slot out of the schedule), which saves that round
# trip. A resolve delivered while a trigger of the slot may still reach PagerDuty late
# (before the uncertainty marker's `confirm_until`) is followed by a confirmation: a copy
# of it (`<event_id>:confirm`) put first in the mailbox, to go once the uncertainty window
# has passed, so a late trigger that re-opened the incident is closed again; the pass
# ends there.
# Returns {events left, circuit transition, now, 1 if the lease was released else 0}, and
# with KEYS[17], once released, the body and body encoding of the queued deliver message
# it took (`take_queued`): a follow-on without a round trip of its own.
FINISH = NOW + APPEND_TIMELINE + ACCOUNT + TAKE_QUEUED_FN + """
if redis.call('HGET', KEYS[4], 'written_by') == 'finish ' .. ARGV[1]
    and redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then
  -- redis-py sending this very call again after its reply was lost: it already ran, so
  -- record nothing twice (timeline, circuit) and answer as it did. An event at the head
  -- again was replayed from the dead letters since: it is finished anew.
  local reply = redis.call('HGET', KEYS[4], 'finish_reply')
  if reply then return cjson.decode(reply) end
  return {redis.call('LLEN', KEYS[2]), '', now, 0}
end
local fields = cjson.decode(ARGV[9])
for k, v in pairs(fields) do redis.call('HSET', KEYS[4], k, v) end
redis.call('HSET', KEYS[4], 'state', ARGV[4], 'finished_at', now,
           'written_by', 'finish ' .. ARGV[1])
redis.call('HDEL', KEYS[4], 'in_flight')
if redis.call('LINDEX', KEYS[2], 0) == ARGV[2] then redis.call('LPOP', KEYS[2]) end
if ARGV[4] == 'dead_lettered' then
  redis.call('ZADD', KEYS[6], now, ARGV[2])
  redis.call('PERSIST', KEYS[4])
else
  redis.call('ZREM', KEYS[6], ARGV[2])
  redis.call('PEXPIRE', KEYS[4], ARGV[6])
end
append_timeline(KEYS[5], ARGV[10], tonumber(ARGV[7]), ARGV[8])
local ours = redis.call('GET', KEYS[1]) == ARGV[1]
if ours then
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
-- what PagerDuty holds for the slot: kept for as long as an alert is open (however long
-- that is), gone once resolved
if ARGV[4] == 'delivered' then
  if ARGV[13] == 'resolve' then
    redis.call('DEL', KEYS[14])
  else
    redis.call('SET', KEYS[14], ARGV[13])
  end
end
local health = account(ARGV[11], cjson.decode(ARGV[12]),
                       {KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[3], KEYS[11], KEYS[12]})
local released = 0
local doubt = redis.call('HMGET', KEYS[15], 'action', 'confirm_until')
if ARGV[4] == 'delivered' and ARGV[13] == 'resolve' and doubt[1] == 'trigger'
    and (tonumber(doubt[2]) or 0) > now
    and not redis.call('HGET', KEYS[4], 'confirm_of') then
  local confirm = ARGV[2] .. ':confirm'
  local key = ARGV[16] .. confirm
  if redis.call('EXISTS', key) == 0 then
    local window = tonumber(ARGV[15])
    local source = redis.call('HMGET', KEYS[4], 'event', 'incident_id')
    redis.call('HSET', key, 'event', source[1] or '', 'state', 'pending', 'slot', ARGV[3],
               'attempts', 0, 'enqueued_at', now, 'action', 'resolve',
               'incident_id', source[2] or 'unknown', 'confirm_of', ARGV[2])
    -- next in line: a later event of the key (a new outage's trigger) must not go before
    -- it, or the confirmation would resolve the new incident
    redis.call('LPUSH', KEYS[2], confirm)
    local slash = string.find(ARGV[3], '/', 1, true) or 0
    append_timeline(KEYS[5], cjson.encode({{
      'stage', 'enqueued', 'event_id', confirm, 'action', 'resolve',
      'destination', string.sub(ARGV[3], 1, slash - 1),
      'dedup_key', string.sub(ARGV[3], slash + 1), 'confirm_of', ARGV[2],
      'reason', 'confirm'}}), tonumber(ARGV[7]), ARGV[8])
    -- due once the window has passed: the slot waits as a backoff does
    redis.call('SET', KEYS[16], '1', 'PX', math.max(1, window))
    redis.call('ZADD', KEYS[3], now + math.max(1, window), ARGV[3])
    if ours then redis.call('DEL', KEYS[1]) end
    released = 1
  end
  redis.call('DEL', KEYS[15])
end
local left = redis.call('LLEN', KEYS[2])
if released == 0 and left == 0 and ARGV[14] == '1' and ours then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[3], ARGV[3])
  released = 1
end
local reply = {left, health[1], now, released}
if released == 1 and KEYS[17] then
  local taken = take_queued(KEYS[17], ARGV[17])
  if taken then reply = {left, health[1], now, released, taken[1], taken[2]} end
end
redis.call('HSET', KEYS[4], 'finish_reply', cjson.encode(reply))
return reply
"""

# KEYS: 1 lease, 2 schedule, 3 event, 4 timeline, 5 hold,
#       6..11 circuit, circuit_wait, probe, cooldown, circuit_log, rate window,
#       12 uncertainty marker
# ARGV: 1 token, 2 slot, 3 backoff_ms, 4 timeline_retention_ms, 5 timeline_ttl_ms,
#       6 fields_json, 7 entries_json, 8 outcome, 9 account params (JSON),
#       10 retry_scheduled entry base fields (JSON), 11 '1' when the request went out and
#       its answer was lost, 12 the event's action, 13 uncertainty window ms
# Keeps the head event, records the attempt, and makes the whole slot wait: its own
# backoff, or longer while the circuit is open or the destination cools down after a 429.
# The hold stops any stray task for the slot; the schedule brings it back when due. An
# answer lost after the request went out makes the slot uncertain (UNCERTAIN_FN).
# Returns {delay_ms, circuit transition}.
RETRY = NOW + APPEND_TIMELINE + ACCOUNT + UNCERTAIN_FN + """
if redis.call('HGET', KEYS[3], 'written_by') == 'retry ' .. ARGV[1] then
  -- this very call sent again after its reply was lost (see FINISH): answer as it did
  local reply = redis.call('HGET', KEYS[3], 'retry_reply')
  if reply then return cjson.decode(reply) end
  return {math.max(1, redis.call('PTTL', KEYS[5])), ''}
end
local fields = cjson.decode(ARGV[6])
for k, v in pairs(fields) do redis.call('HSET', KEYS[3], k, v) end
redis.call('HSET', KEYS[3], 'written_by', 'retry ' .. ARGV[1])
redis.call('HDEL', KEYS[3], 'in_flight')
if ARGV[11] == '1' then uncertain(KEYS[12], ARGV[12], now, tonumber(ARGV[13])) end
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
redis.call('HSET', KEYS[3], 'retry_reply', cjson.encode({delay, health[1]}))
return {delay, health[1]}
"""

# KEYS: 1 lease, 2 schedule, 3 timeline, 4 the head event, [5 maintenance, 6 the window's
#       held set]
# ARGV: 1 token, 2 slot, 3 due_in_ms, 4 timeline retention ms, 5 timeline ttl ms, 6 entry
#       (JSON list), 7 '1' when a maintenance window holds the event (the time does not age
#       it: see `read_head`), [8 window id, 9 the window's JSON as the worker read it,
#       10 recheck ms]
# Gives the slot back until due_in_ms from now, recording why in the timeline (an event
# held for a maintenance window, or waiting for an uncertain request). With the bracketed
# KEYS and ARGV (a run-time window), the slot is held only if Redis still has that very
# window, and is recorded in its held set for `maintenance remove` to wake; a window
# removed or changed since the worker read it holds nothing: the slot is looked at again
# after recheck ms, when the worker's view is fresh. Returns 1 when held, 0 when not; a
# client's resend of the same call (`waited_by` names the pass) answers as the first did.
WAIT = NOW + APPEND_TIMELINE + """
local memo = redis.call('HGET', KEYS[4], 'waited_by')
if memo and string.sub(memo, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  return tonumber(string.sub(memo, #ARGV[1] + 2))
end
local due_in = tonumber(ARGV[3])
local held = 1
if KEYS[5] then
  if redis.call('HGET', KEYS[5], ARGV[8]) == ARGV[9] then
    redis.call('SADD', KEYS[6], ARGV[2])
    if redis.call('PTTL', KEYS[6]) < due_in + 60000 then
      redis.call('PEXPIRE', KEYS[6], due_in + 60000)
    end
  else
    due_in, held = math.min(due_in, tonumber(ARGV[10])), 0
  end
end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZADD', KEYS[2], now + due_in, ARGV[2])
if held == 1 then
  append_timeline(KEYS[3], '[' .. ARGV[6] .. ']', tonumber(ARGV[4]), ARGV[5])
  if ARGV[7] == '1' then redis.call('HSETNX', KEYS[4], 'held_at', now) end
end
redis.call('HSET', KEYS[4], 'waited_by', ARGV[1] .. ' ' .. held)
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

    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self.claim_due = IdempotentScript(client, CLAIM_DUE, keys)
        self.acquire = client.register_script(ACQUIRE)
        self.take_head = client.register_script(TAKE_HEAD)
        self.finish = client.register_script(FINISH)
        self.retry = client.register_script(RETRY)
        self.release = client.register_script(RELEASE)
        self.gate = client.register_script(GATE)
        self.wait = client.register_script(WAIT)
