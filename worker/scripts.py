"""The worker's atomic steps on Redis, as Lua scripts.

Each step that must not be split by a crash is one script: a worker that dies between two
scripts leaves every event either still in its mailbox or in a final state, never neither.
Times come from Redis's own clock (TIME), so workers on hosts with skewed clocks agree.

Timeline entries are passed as JSON lists of alternating field names and values; the
stream entry id carries the time.
"""

from __future__ import annotations

import redis

NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

APPEND_TIMELINE = """
local function append_timeline(key, entries_json, retention_ms, ttl_ms)
  for _, entry in ipairs(cjson.decode(entries_json)) do
    redis.call('XADD', key, 'MINID', '~', tostring(now - retention_ms), '*', unpack(entry))
  end
  redis.call('PEXPIRE', key, ttl_ms)
end
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

# KEYS: lease, schedule, mailbox, hold   ARGV: token, lease_ms, slot
# Returns -2 while the slot backs off, -1 when another worker holds it, 0 when there is
# nothing to deliver (the slot leaves the schedule), else the number of pending events.
ACQUIRE = NOW + """
if redis.call('EXISTS', KEYS[4]) == 1 then return -2 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
local pending = redis.call('LLEN', KEYS[3])
if pending == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 0
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
return pending
"""

# KEYS: lease, schedule, mailbox   ARGV: token, lease_ms, slot, event key prefix
# Renews the lease and returns {1, now, event_id, field, value, ...} for the head event,
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
local result = {1, now, id}
for _, v in ipairs(redis.call('HGETALL', ARGV[4] .. id)) do result[#result + 1] = v end
return result
"""

# KEYS: lease, mailbox, schedule, event, timeline, dead_letters
# ARGV: token, event_id, slot, state, lease_ms, event_ttl_ms, timeline_retention_ms,
#       timeline_ttl_ms, fields_json, entries_json
# Ends the head event in a final state: pops it (only if it is still the head), records
# the outcome and the timeline entries, files a dead letter. Returns the events left.
FINISH = NOW + APPEND_TIMELINE + """
local fields = cjson.decode(ARGV[9])
for k, v in pairs(fields) do redis.call('HSET', KEYS[4], k, v) end
redis.call('HSET', KEYS[4], 'state', ARGV[4], 'finished_at', now)
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
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return redis.call('LLEN', KEYS[2])
"""

# KEYS: lease, schedule, event, timeline, hold
# ARGV: token, slot, delay_ms, timeline_retention_ms, timeline_ttl_ms, fields_json,
#       entries_json
# Keeps the head event, records the attempt, and makes the whole slot wait delay_ms: the
# hold stops any stray task for the slot, the schedule brings it back when due.
RETRY = NOW + APPEND_TIMELINE + """
local fields = cjson.decode(ARGV[6])
for k, v in pairs(fields) do redis.call('HSET', KEYS[3], k, v) end
append_timeline(KEYS[4], ARGV[7], tonumber(ARGV[4]), ARGV[5])
local delay = math.max(1, tonumber(ARGV[3]))
redis.call('SET', KEYS[5], '1', 'PX', delay)
redis.call('ZADD', KEYS[2], now + delay, ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return now + delay
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
