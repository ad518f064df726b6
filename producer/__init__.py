"""MoniTao's side of the fleet: the alert event and the producer that enqueues it."""

from producer.event import AlertEvent, parse_event
from producer.producer import AlertProducer

__all__ = ["AlertEvent", "AlertProducer", "parse_event"]
