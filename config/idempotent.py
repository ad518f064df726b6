"""Lua scripts that answer a resent call as their first run did.

redis-py sends a command again when its connection drops before the reply arrives (its
default retry on connection errors and timeouts), although Redis may already have run it.
A script that took something (a queued message, due slots) or changed what a second run
decides (a replay, a maintenance window) would then act twice or answer differently: the
message it took is lost until a claim ends, an operator is told "no such window" about the
window just removed. `IdempotentScript` gives every call an id of its own; the first run
keeps its reply under that id (`Keyspace.reply`) for `MEMO_SECONDS`, and a resend of the
same call finds it and returns it unchanged.

The hot delivery scripts keep their memo on the event they already write instead (see
worker/scripts.py and producer/enqueue.py): a key per call would cost a write and memory
per alert.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import redis

from config.keyspace import Keyspace

# Longer than redis-py's retries can take: 3 retries, backoff capped at 10 s, each send
# bounded by the socket timeout (config/connections.py).
MEMO_SECONDS = 120

# The script's own KEYS and ARGV stay as it expects: the memo key and its lifetime are
# appended by the caller and taken off first. Lua numbers survive cjson exactly up to 14
# digits (epoch milliseconds have 13).
_WRAPPER = """
local memo_key = table.remove(KEYS)
local memo_ms = table.remove(ARGV)
local memo = redis.call('GET', memo_key)
if memo then return cjson.decode(memo) end
local reply = (function()
%s
end)()
redis.call('SET', memo_key, cjson.encode(reply), 'PX', memo_ms)
return reply
"""


class IdempotentScript:
    """A Lua script registered on `client` whose resent calls answer as the first did.

    Called like redis-py's `Script`: `script(keys=[...], args=[...], client=None)`.
    """

    def __init__(self, client: redis.Redis, lua: str, keys: Keyspace) -> None:
        self._script = client.register_script(_WRAPPER % lua)
        self._keys = keys

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (),
                 client: Any = None) -> Any:
        call = os.urandom(12).hex()  # one id per call: redis-py's resend carries the same
        return self._script(keys=[*keys, self._keys.reply(call)],
                            args=[*args, MEMO_SECONDS * 1000], client=client)
