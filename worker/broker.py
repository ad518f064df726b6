"""One redis-py client per kombu channel, instead of one per broker command.

kombu's Redis transport builds a new redis-py client object (`Channel._create_client`)
for every acknowledgement, every task-event PUBLISH and every publish outside the event
loop. redis-py's constructor copies its table of response callbacks each time: profiled
under load, that was 17% of a worker's CPU. A client holds no connection of its own (it
borrows from the channel's pool per command) and is safe to share between threads, so
one per channel and pool does the same work. A new pool (after a fork or a reconnection)
gets a new client.

`pipelined(producer)` goes one step further for a batch of publishes (the producer's
`send_many`, the dispatcher's tick): their commands go out in one round trip.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

from config import defaults

_ORIGINAL = kombu_redis.Channel._create_client


def _create_client(self: Any, asynchronous: bool = False) -> Any:
    if asynchronous:
        return _ORIGINAL(self, asynchronous=True)
    target = getattr(_batch, "target", None)
    if target is not None and target[0] is self:
        return target[1]
    pool = self.pool
    cached = self.__dict__.get("_monitao_client")
    if cached is None or cached[0] is not pool:
        cached = (pool, _ORIGINAL(self))
        self.__dict__["_monitao_client"] = cached
    return cached[1]


def reuse_channel_clients() -> None:
    """Make every kombu Redis channel (Sentinel ones too) reuse one client (idempotent)."""
    kombu_redis.Channel._create_client = _create_client


_batch = threading.local()


@contextmanager
def pipelined(producer: Any) -> Iterator[None]:
    """Send what this thread publishes through `producer` inside the block in one round trip.

    Celery's `send_task` costs a broker round trip (the LPUSH of the message, and the
    PUBLISH of a task-sent event where those are on); inside the block, the commands are
    queued on one redis-py pipeline and sent when the block ends. A failure there raises
    from the `with` statement: none or some of the messages were published, as when
    `send_task` fails half way.
    """
    channel = producer.channel
    if not isinstance(channel, kombu_redis.Channel):  # another transport: as it is
        yield
        return
    pipe = channel._create_client().pipeline(transaction=False)
    previous = getattr(_batch, "target", None)
    _batch.target = (channel, pipe)
    try:
        yield
    finally:
        _batch.target = previous
    pipe.execute()


def publish_deliveries(app: Any, slots: list[tuple[str, str]]) -> None:
    """Publish the deliver task of each (destination, dedup_key), in one broker round trip."""
    if not slots:
        return
    with app.producer_or_acquire() as producer, pipelined(producer):
        for destination, dedup_key in slots:
            app.send_task(defaults.DELIVER_TASK, args=(destination, dedup_key),
                          producer=producer)
