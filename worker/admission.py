"""Whether a slot may send now, decided fleet-wide in Redis: circuit, cooldown, rate window.

Three gates, checked in one script before every request (`GATE`), and fed by the outcome
of every request (`ACCOUNT`, run inside the finish and retry scripts):

- **Circuit breaker per Events endpoint.** After `threshold` failures in a row (5xx,
  timeouts, connection errors) across all slots, the endpoint is open: nothing is sent to
  it. At the end of each open interval one slot sends a probe; success closes the circuit
  and wakes the slots that waited on it (a bounded batch in the same script, the rest by
  the dispatchers: worker/circuit_wake.py), failure doubles the interval (up to a cap).
- **429 cooldown per destination.** A 429 makes the whole destination wait, growing with
  each 429 in a row, so the fleet backs off as one instead of every worker hammering it.
- **Sliding 60 s window per destination.** At most `rate_limit_per_minute` requests in any
  window. A slot over budget waits in a per-destination waiting room ordered by the age of
  its oldest event, and is told to come back when its turn's token frees, so the oldest
  incidents go first and waiting slots do not poll.

A denied slot is released and rescheduled by the gate itself, in the same atomic step.
"""

from __future__ import annotations

from dataclasses import dataclass

from config import defaults

# Redis's clock (epoch ms) as `now`, for every script that starts with it.
NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Lua: `gate(K, A)`, with `now` in scope.
# K: 1 lease, 2 schedule, 3 timeline, 4 circuit, 5 circuit_wait, 6 probe, 7 cooldown,
#    8 window, 9 waiting room, 10 the event
# A: 1 token, 2 slot, 3 event_id, 4 head enqueued at (ms), 5 budget, 6 window_ms,
#    7 lease_ms, 8 circuit threshold, 9 timeline retention ms, 10 timeline ttl ms,
#    11 timeline entry base fields (JSON list), 12 claim_ms
# Returns {1, probe, window member} when the request may go (and marks the event `sent`,
# and `in_flight` since now until its attempt finishes: from now on PagerDuty may have
# it), {0, wait_ms, reason} when the slot must wait, and {0, 0, 'lease_lost'} when another
# worker has the slot now: nothing may be sent. The answer is kept on the event for the
# pass (`gate_by`, `gate_reply`), so a client's resend of the same call (its reply lost)
# gets the same answer instead of a second place in the window or a probe held by nobody.
GATE_FN = """
local function decide(K, A)
  local slot = A[2]

  -- a pass that lost its lease (a slow step, a stalled Redis) must not send: another worker
  -- may have sent this event and the ones after it already
  if redis.call('GET', K[1]) ~= A[1] then return {0, 0, 'lease_lost'} end
  redis.call('PEXPIRE', K[1], A[7])
  redis.call('ZADD', K[2], 'XX', now + tonumber(A[7]), slot)

  local function deny(wait, reason, stage)
    wait = math.max(50, math.floor(wait))
    if redis.call('GET', K[1]) == A[1] then redis.call('DEL', K[1]) end
    redis.call('ZADD', K[2], now + wait, slot)
    local entry = {'stage', stage}
    for _, v in ipairs(cjson.decode(A[11])) do entry[#entry + 1] = v end
    for _, v in ipairs({'reason', reason, 'retry_at', tostring(now + wait),
                        'delay_ms', tostring(wait)}) do entry[#entry + 1] = v end
    redis.call('XADD', K[3], 'MINID', '~', tostring(now - tonumber(A[9])), '*',
               unpack(entry))
    redis.call('PEXPIRE', K[3], A[10])
    return {0, wait, reason}
  end

  local probe = 0
  if tonumber(redis.call('HGET', K[4], 'failures') or '0') >= tonumber(A[8]) then
    local open_until = tonumber(redis.call('HGET', K[4], 'open_until') or '0')
    local interval = tonumber(redis.call('HGET', K[4], 'interval') or '1000')
    redis.call('SADD', K[5], slot)
    -- (woken early when the circuit closes; a slot it loses still comes back by its own
    -- schedule entry)
    redis.call('PEXPIRE', K[5], 86400000)
    if now < open_until then return deny(open_until - now, 'circuit_open', 'retry_scheduled') end
    if not redis.call('SET', K[6], A[1], 'NX', 'PX', A[7]) then
      return deny(interval, 'circuit_open', 'retry_scheduled')
    end
    probe = 1
  end

  local cool = tonumber(redis.call('HGET', K[7], 'until') or '0')
  if cool > now then
    if probe == 1 then redis.call('DEL', K[6]) end
    return deny(cool - now, 'cooldown', 'rate_limited')
  end

  local window_ms = tonumber(A[6])
  local budget = tonumber(A[5])
  redis.call('ZREMRANGEBYSCORE', K[8], '-inf', now - window_ms)
  local free = budget - redis.call('ZCARD', K[8])
  -- How many waiters are ahead is a rank in the room (O(log N)), so the room holds only
  -- live waiters. An older waiter is live while it is due within the horizon: its turn is
  -- within a window, or its task is queued or running (the schedule then holds it for a
  -- claim or a lease, which may be longer than a window). One due later than that is
  -- stalled (backing off, held by maintenance), or gone from the schedule, and must not
  -- hold the budget for everyone else: it leaves the room as it reaches the front (a few
  -- per call, so a call stays bounded; one further back only makes younger waiters wait
  -- longer, never go first). It comes back with the same score, the age of its oldest
  -- event, and so to the same place.
  local horizon = now + math.max(window_ms, tonumber(A[12]), tonumber(A[7]))
  for _ = 1, 8 do
    local front = redis.call('ZRANGE', K[9], 0, 0)[1]
    if not front or front == slot then break end
    local due = redis.call('ZSCORE', K[2], front)
    if due and tonumber(due) <= horizon then break end
    redis.call('ZREM', K[9], front)
  end
  local mine = redis.call('ZSCORE', K[9], slot)
  local ahead
  if mine then
    ahead = redis.call('ZRANK', K[9], slot)
  else
    ahead = redis.call('ZCOUNT', K[9], '-inf', '(' .. A[4])
  end
  if ahead < free then
    local member = now .. ':' .. A[3]
    redis.call('ZADD', K[8], now, member)
    redis.call('PEXPIRE', K[8], window_ms)
    if mine then redis.call('ZREM', K[9], slot) end
    redis.call('HSET', K[10], 'sent', 1, 'in_flight', now)
    return {1, probe, member}
  end

  if probe == 1 then redis.call('DEL', K[6]) end
  if not mine then redis.call('ZADD', K[9], A[4], slot) end
  redis.call('PEXPIRE', K[9], 86400000)
  local need = ahead + 1 - free
  local rounds = math.floor((need - 1) / budget)
  local token = redis.call('ZRANGE', K[8], (need - 1) % budget, (need - 1) % budget, 'WITHSCORES')
  local wait = (rounds + 1) * window_ms
  if token[2] then wait = tonumber(token[2]) + window_ms - now + rounds * window_ms end
  return deny(wait, 'rate_limit', 'rate_limited')
end

local function gate(K, A)
  local memo = redis.call('HMGET', K[10], 'gate_by', 'gate_reply')
  if memo[1] == A[1] and memo[2] then return cjson.decode(memo[2]) end
  local reply = decide(K, A)
  if reply[3] ~= 'lease_lost' then  -- that answer changed nothing: a resend finds it again
    redis.call('HSET', K[10], 'gate_by', A[1], 'gate_reply', cjson.encode(reply))
  end
  return reply
end
"""

# The gate as a script of its own: KEYS and ARGV as K and A above.
GATE = NOW + GATE_FN + """
return gate(KEYS, ARGV)
"""

# How many waiting slots one script wakes as a circuit closes (see worker/circuit_wake.py).
CIRCUIT_WAKE_BATCH = defaults.CIRCUIT_WAKE_BATCH

# Lua: `wake_waiters(waiting, schedule, hold_prefix)`, with `now` in scope: takes at most
# CIRCUIT_WAKE_BATCH slots out of a circuit's waiting set and makes each due now, ending
# its back-off hold. Returns how many it woke.
WAKE_WAITERS_FN = f"""
local function wake_waiters(waiting, schedule, hold_prefix)
  local woken = redis.call('SPOP', waiting, {CIRCUIT_WAKE_BATCH})
  for _, waiter in ipairs(woken) do
    redis.call('ZADD', schedule, 'XX', now, waiter)
    redis.call('DEL', hold_prefix .. waiter)
  end
  return #woken
end
"""

# Lua: `account(outcome, params)` feeds one request's outcome to the circuit, the cooldown
# and the rate window. outcome is 'ok' (PagerDuty answered, even 4xx), 'fail' (5xx,
# timeout, network), 'throttled' (429) or 'none' (no request). Uses AK = {circuit,
# circuit_wait, probe, cooldown, schedule, circuit_log, rate window}; with 'none' and the
# params of an admission (`member`, `probe`), it gives that admission back. A close wakes
# one batch of the waiting slots and, when more are left, names the endpoint
# (`endpoint_id`) in the set `waking` for the dispatchers to wake the rest. Returns the
# transition ('', 'opened', 'reopened', 'closed') and, while open, when the next probe
# may go.
ACCOUNT = WAKE_WAITERS_FN + """
local function account(outcome, p, AK)
  if outcome == 'none' then
    -- the gate let a request go that was never sent (the event ended before it): give
    -- its place in the window and the circuit's probe back
    if p.member then redis.call('ZREM', AK[7], p.member) end
    if p.probe == 1 then redis.call('DEL', AK[3]) end
    return {'', 0}
  end
  if p.member then
    -- PagerDuty counts a request when it arrives, which may be well after the gate let it
    -- go (a new connection, a slow network): count it from its answer instead.
    if redis.call('ZADD', AK[7], 'XX', 'CH', now, p.member) == 1 then
      redis.call('PEXPIRE', AK[7], p.window_ms)
    end
  end
  local threshold = tonumber(p.threshold)
  local failures = tonumber(redis.call('HGET', AK[1], 'failures') or '0')
  if outcome == 'ok' then
    local transition = ''
    if failures >= threshold then
      transition = 'closed'
      -- one bounded batch here: waking 100,000 in one script blocked Redis for a second
      wake_waiters(AK[2], AK[5], p.hold_prefix)
      if p.waking and redis.call('EXISTS', AK[2]) == 1 then
        redis.call('SADD', p.waking, p.endpoint_id)
        redis.call('PEXPIRE', p.waking, 86400000)
      end
      redis.call('XADD', AK[6], 'MAXLEN', '~', 1000, '*', 'endpoint', p.endpoint,
                 'event', 'closed')
    end
    if failures > 0 then redis.call('DEL', AK[1]) end
    if p.probe == 1 then redis.call('DEL', AK[3]) end
    if tonumber(redis.call('HGET', AK[4], 'until') or '0') <= now then
      redis.call('DEL', AK[4])
    end
    return {transition, 0}
  elseif outcome == 'fail' then
    failures = redis.call('HINCRBY', AK[1], 'failures', 1)
    redis.call('PEXPIRE', AK[1], 86400000)
    local transition = ''
    if failures == threshold or (failures > threshold and p.probe == 1) then
      local interval = tonumber(p.base_ms)
      transition = 'opened'
      if failures > threshold then
        interval = math.min(tonumber(p.cap_ms),
                            2 * tonumber(redis.call('HGET', AK[1], 'interval') or p.base_ms))
        transition = 'reopened'
        redis.call('DEL', AK[3])
      end
      redis.call('HSET', AK[1], 'interval', interval, 'open_until', now + interval)
      redis.call('XADD', AK[6], 'MAXLEN', '~', 1000, '*', 'endpoint', p.endpoint,
                 'event', transition, 'interval_ms', interval)
    end
    if failures >= threshold then
      return {transition, tonumber(redis.call('HGET', AK[1], 'open_until') or '0')}
    end
    return {transition, 0}
  elseif outcome == 'throttled' then
    -- 429s answered to requests already in flight when a cooldown began are one strike,
    -- not one each: only a 429 outside a cooldown makes the next one longer.
    if tonumber(redis.call('HGET', AK[4], 'until') or '0') > now then return {'', 0} end
    local strikes = redis.call('HINCRBY', AK[4], 'strikes', 1)
    local delay = math.min(tonumber(p.cool_cap_ms),
                           tonumber(p.cool_base_ms) * 2 ^ math.min(strikes - 1, 30))
    local until_ms = now + delay
    redis.call('HSET', AK[4], 'until', until_ms)
    redis.call('PEXPIRE', AK[4], math.floor(until_ms - now) + 600000)
    return {'', 0}
  end
  return {'', 0}
end
"""


@dataclass(frozen=True)
class Admission:
    """The gate's answer: go (possibly as the circuit's probe) or wait."""

    allowed: bool
    probe: bool = False
    wait_ms: int = 0
    reason: str = ""
    window_member: str = ""

    @classmethod
    def from_script(cls, raw: list[object]) -> Admission:
        """Decode GATE's reply."""
        if int(raw[0]) == 1:  # type: ignore[call-overload]
            return cls(True, probe=int(raw[1]) == 1,  # type: ignore[call-overload]
                       window_member=str(raw[2]))
        return cls(False, wait_ms=int(raw[1]), reason=str(raw[2]))  # type: ignore[call-overload]


def outcome_class(kind: str, http_status: int | None, abandoned: bool = False) -> str:
    """What one request says about the endpoint's health, for ACCOUNT (an abandoned attempt
    sent nothing: its admission is given back)."""
    if abandoned:
        return "none"
    if http_status == 429:
        return "throttled"
    if kind == "retry":
        return "fail"
    return "ok"
