"""A lock in Redis held by one process at a time: `SET NX PX` with a random owner token,
renewed and released only by its owner (a small Lua compare-and-act), so a holder whose lock
expired can never release or extend the next holder's."""

from __future__ import annotations

import secrets

import redis

# KEYS: the lock; ARGV: the owner's token. Deletes it only when still held by that owner.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: the lock; ARGV: the owner's token, TTL (ms). Extends it only for that owner.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class RedisLock:
    """One named lock; `acquire` then `renew` while working, `release` when done."""

    def __init__(self, client: redis.Redis, key: str, ttl_seconds: float) -> None:
        self.client, self.key = client, key
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.token = secrets.token_hex(16)
        self._release = client.register_script(RELEASE)
        self._renew = client.register_script(RENEW)

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this owner holds it now."""
        self.token = secrets.token_hex(16)
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        """Extend the lock by its TTL; False when this owner no longer holds it."""
        return bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> bool:
        """Let the lock go; False when this owner no longer held it."""
        return bool(self._release(keys=[self.key], args=[self.token]))
