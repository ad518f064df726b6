"""Follow-on deliveries: a deliver task that has made its own pass takes further deliver
messages straight off the broker queue and makes their passes too.

Celery's own cost per message (receiving it, its task events, the late ack, the hand-off
to a pool thread) was about half of a worker's CPU per delivered event in `make bench`.
When messages wait in the queue anyway, as in an alert storm, a task that goes on with them
pays that cost once for many keys; when the queue is empty it ends as before. Flower then
shows fewer tasks than keys: each task's result counts its `follow_ons`, and the timeline
names the task that made each attempt.

Nothing is lost by taking a message this way. A deliver message only wakes a pass; the key
itself is in the schedule, claimed for `claim_seconds` by whoever published it. A worker
that dies between taking a message and leasing its key is recovered when that claim ends
(a dispatcher publishes the key again), as when a producer dies before publishing.

Only a well-formed deliver message without an ETA is taken, in one script that pops it or
puts it back: anything else stays in the queue for Celery and its poison handling.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from config import defaults
from worker.context import FleetContext

# KEYS: the broker queue (a kombu list: LPUSH to publish, RPOP/BRPOP to consume)
# ARGV: the deliver task's name
# Returns {body, body_encoding} of the oldest message if it is a deliver task message
# Celery could run at once; otherwise puts it back where it was and returns nil.
TAKE_QUEUED = """
local raw = redis.call('RPOP', KEYS[1])
if not raw then return nil end
local ok, message = pcall(cjson.decode, raw)
if ok and type(message) == 'table' and type(message.body) == 'string' then
  local headers, properties = message.headers, message.properties
  if type(headers) == 'table' and headers.task == ARGV[1]
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
redis.call('RPUSH', KEYS[1], raw)
return nil
"""


@dataclass(frozen=True)
class QueuedSlot:
    """A slot whose deliver message was taken off the queue."""

    destination: str
    dedup_key: str


def slot_from_body(body: str, encoding: str) -> QueuedSlot | None:
    """The (destination, dedup_key) of a deliver message's body; None if it holds neither."""
    try:
        data = base64.b64decode(body, validate=True) if encoding == "base64" else body
        args = json.loads(data)[0]
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    if (isinstance(args, list) and len(args) == 2
            and all(isinstance(a, str) for a in args)):
        return QueuedSlot(args[0], args[1])
    return None


class FollowOns:
    """Takes queued deliver messages for the tasks of one worker process."""

    def __init__(self, ctx: FleetContext) -> None:
        self.ctx = ctx
        self._script: Any = None

    def take(self) -> QueuedSlot | None:
        """The slot of the oldest queued deliver message, taken off the queue; or None.

        A taken message whose arguments are not two strings is filed as a `malformed`
        dead letter, as Celery's consumer would have, and the next one is tried.
        """
        from worker.poison import record_malformed

        while True:
            reply = self._take_raw()
            if reply is None:
                return None
            body, encoding = (_text(part) for part in reply)
            slot = slot_from_body(body, encoding)
            if slot is not None:
                return slot
            record_malformed(self.ctx, body, "deliver task arguments",
                             "arguments must be two strings: destination, dedup_key")

    def _take_raw(self) -> list[Any] | None:
        broker = self.ctx.broker_redis
        if self._script is None:
            self._script = broker.register_script(TAKE_QUEUED)
        queue = self.ctx.keys.queue(defaults.QUEUE_NAME)
        return self._script(  # type: ignore[no-any-return]
            keys=[queue], args=[defaults.DELIVER_TASK], client=self.ctx.thread_client(broker))


def deliver_follow_ons(ctx: FleetContext, deliver: Callable[[str, str], object], *,
                       deadline: float) -> int:
    """Make the passes of queued deliver messages until the queue is empty, `deadline` (a
    `time.monotonic()` reading) has passed, or the worker is stopping; return how many.

    `deliver(destination, dedup_key)` makes one pass; give it the same deadline, so that a
    task with follow-ons lasts no longer than a task without.
    """
    made = 0
    while time.monotonic() < deadline and not ctx.stopping.is_set():
        try:
            slot = ctx.follow_ons.take()
        except redis.RedisError:
            return made  # the broker is unreachable: Celery's consumer will notice too
        if slot is None:
            return made
        deliver(slot.destination, slot.dedup_key)
        made += 1
    return made


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="surrogateescape") if isinstance(value, bytes) else value
