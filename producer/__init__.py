"""MoniTao's side of the fleet: the alert event and the producer that enqueues it.

`AlertProducer.send()` raises `InvalidEventError` (nothing enqueued; `problems` names every
field and reason) or `RedisUnavailableError`.
"""

from config.errors import InvalidEventError, RedisUnavailableError
from producer.event import AlertEvent, parse_event
from producer.producer import AlertProducer

__all__ = [
    "AlertEvent",
    "AlertProducer",
    "InvalidEventError",
    "RedisUnavailableError",
    "parse_event",
]
