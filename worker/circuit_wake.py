"""Waking the slots that waited on a circuit, in bounded batches, once it has closed.

The probe's success closes an endpoint's circuit and wakes one batch of the slots waiting on
it in the same script (admission.ACCOUNT); when more are left, the endpoint goes into the
`circuit_waking` set, and every worker's dispatcher wakes a further batch per tick, going
again at once while any are left. No script wakes more than CIRCUIT_WAKE_BATCH slots, so
Redis keeps answering everyone else, and 100,000 waiting slots are all due again within
about a second (bench --scale). A slot never depends on being woken: each has its own
schedule entry, due when the open interval or its back-off ends.
"""

from __future__ import annotations

import redis

from config.idempotent import IdempotentScript
from config.keyspace import Keyspace
from worker.admission import NOW, WAKE_WAITERS_FN

# KEYS: 1 circuit_waking, 2 circuit, 3 circuit_wait, 4 schedule
# ARGV: 1 endpoint id, 2 hold key prefix, 3 circuit threshold
# Wakes one batch of the endpoint's waiting slots while its circuit is closed; once none
# are left, or the circuit has opened again (its next close wakes them), the endpoint
# leaves `circuit_waking`. Returns how many slots it woke.
WAKE = NOW + WAKE_WAITERS_FN + """
if tonumber(redis.call('HGET', KEYS[2], 'failures') or '0') >= tonumber(ARGV[3]) then
  redis.call('SREM', KEYS[1], ARGV[1])
  return 0
end
local woken = wake_waiters(KEYS[3], KEYS[4], ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('SREM', KEYS[1], ARGV[1]) end
return woken
"""


def wake_waiters(client: redis.Redis, keys: Keyspace, threshold: int) -> int:
    """Wake one batch of waiting slots for each endpoint whose circuit closed with some
    left; returns how many were woken (0 when nothing is left to wake)."""
    endpoints = client.smembers(keys.circuit_waking)
    if not endpoints:
        return 0
    wake = IdempotentScript(client, WAKE, keys)
    woken = 0
    for endpoint in endpoints:
        woken += int(wake(keys=[keys.circuit_waking, keys.circuit(endpoint),  # type: ignore[arg-type]
                                keys.circuit_waiting(endpoint), keys.schedule],
                          args=[endpoint, keys.hold_prefix, threshold]))
    return woken
