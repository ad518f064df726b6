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

Only a well-formed deliver message without an ETA is taken, by a script that pops it or
puts it back: anything else stays in the queue for Celery and its poison handling. When
the broker is the fleet's own Redis, the finish script that empties a key takes the next
message itself, which saves a round trip per follow-on.
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
from config.idempotent import IdempotentScript
from worker.context import FleetContext
from worker.poison import as_text, record_malformed
from worker.scripts import TAKE_QUEUED


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

    def take(self, taken: list[Any] | None = None) -> QueuedSlot | None:
        """The slot of the oldest queued deliver message, taken off the queue; or None.

        `taken` is a message a finish script already took ([body, body encoding]). A
        taken message whose arguments are not two strings is filed as a `malformed` dead
        letter, as Celery's consumer would have, and None is returned: the task ends its
        follow-ons there.
        """
        reply = taken if taken is not None else self._take_raw()
        if reply is None:
            return None
        body, encoding = (as_text(part) for part in reply)
        slot = slot_from_body(body, encoding)
        if slot is None:
            record_malformed(self.ctx, body, "deliver task arguments",
                             "arguments must be two strings: destination, dedup_key")
        return slot

    @property
    def with_finish(self) -> tuple[str, str] | None:
        """(queue key, task name) for a finish script to take the next message itself;
        None when the broker is another Redis than the fleet's state."""
        if self.ctx.broker_redis is not self.ctx.redis:
            return None
        return self.ctx.keys.queue(defaults.QUEUE_NAME), defaults.DELIVER_TASK

    def _take_raw(self) -> list[Any] | None:
        broker = self.ctx.broker_redis
        if self._script is None:
            self._script = IdempotentScript(broker, TAKE_QUEUED, self.ctx.keys)
        queue = self.ctx.keys.queue(defaults.QUEUE_NAME)
        return self._script(  # type: ignore[no-any-return]
            keys=[queue], args=[defaults.DELIVER_TASK], client=self.ctx.thread_client(broker))


def may_take(ctx: FleetContext, deadline: float) -> bool:
    """Whether a task may take one more follow-on now."""
    return time.monotonic() < deadline and not ctx.stopping.is_set()


def deliver_follow_ons(ctx: FleetContext, deliver: Callable[[str, str], list[Any] | None], *,
                       deadline: float, taken: list[Any] | None = None) -> int:
    """Make the passes of queued deliver messages until the queue is empty, `deadline` (a
    `time.monotonic()` reading) has passed, or the worker is stopping; return how many.

    `deliver(destination, dedup_key)` makes one pass and returns the message its finish
    script took, if any (as `taken`, the one the task's own pass took); give it the same
    deadline, so that a task with follow-ons lasts no longer than a task without. A
    message already taken is always delivered: nobody else can see it any more.
    """
    made = 0
    while taken is not None or may_take(ctx, deadline):
        try:
            slot = ctx.follow_ons.take(taken)
        except redis.RedisError:
            return made  # the broker is unreachable: Celery's consumer will notice too
        if slot is None:
            return made
        taken = deliver(slot.destination, slot.dedup_key)
        made += 1
    return made
