"""Poison messages: what cannot be decoded is dead-lettered as `malformed`, raw bytes kept.

A deliver task whose message or arguments are garbage, or a mailbox entry whose stored
event cannot be read, must never crash a worker or vanish: it becomes a dead letter that
an operator can inspect (`monitao-pd dlq list --reason malformed`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery.worker.consumer import Consumer

log = logging.getLogger(__name__)

# Enough of a raw message to see what sent it, without letting garbage fill Redis.
MAX_RAW_CHARS = 64 * 1024


def as_text(raw: bytes | str | object) -> str:
    """Raw bytes as text that survives Redis byte for byte (surrogate escapes)."""
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", errors="surrogateescape")
    elif isinstance(raw, str):
        text = raw
    else:
        text = repr(raw)
    return text[:MAX_RAW_CHARS]


def record_malformed(fleet: Any, raw: bytes | str | object, origin: str, error: str) -> str:
    """File a dead letter for something that could not be decoded; return its id."""
    keys = fleet.keys
    event_id = f"malformed-{uuid.uuid4().hex}"
    client = fleet.redis
    now_ms = int(client.time()[0]) * 1000
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.event(event_id), mapping={
        "state": "dead_lettered", "reason": "malformed", "raw": as_text(raw),
        "origin": origin, "last_error": error[:500], "slot": "/", "attempts": 0,
        "enqueued_at": now_ms, "finished_at": now_ms,
    })
    pipe.zadd(keys.dead_letters, {event_id: now_ms})
    pipe.execute()
    log.error("malformed %s dead-lettered as %s: %s", origin, event_id, error[:200])
    return event_id


class PoisonAwareConsumer(Consumer):
    """Celery's consumer, filing undecodable or unknown messages as dead letters first."""

    def _file(self, message: Any, origin: str, exc: object) -> None:
        try:
            record_malformed(self.app.fleet, getattr(message, "body", message), origin,
                             f"{type(exc).__name__}: {exc}" if exc else origin)
        except Exception:  # bookkeeping must never kill the consumer
            log.exception("could not file a malformed message as a dead letter")

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._file(message, "undecodable message", exc)
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._file(message, "message in an unknown format", None)
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._file(message, "message for an unknown task", exc)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._file(message, "invalid task message", exc)
        super().on_invalid_task(body, message, exc)
