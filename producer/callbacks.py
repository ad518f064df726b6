"""State changes from PagerDuty, queued for MoniTao's callback URL.

The webhook receiver calls `enqueue_state_change` for each matched change; it becomes an
event of the callback destination, keyed by the incident's dedup_key, so the fleet
delivers it like a PagerDuty event: in order per incident, with backoff, dead letters and
replay. The PagerDuty event id makes it idempotent: a webhook delivered twice is queued once.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis

from config import defaults
from config.keyspace import Keyspace, slot_of
from config.settings import Settings
from producer.enqueue import DUPLICATE, register_enqueue


def enqueue_state_change(
    client: redis.Redis, settings: Settings, incident_id: str, dedup_key: str,
    change: dict[str, Any],
) -> str | None:
    """Queue one state change for the callback URL; its event id, or None without a URL."""
    if not settings.callback_url:
        return None
    keys = Keyspace(settings.key_prefix)
    destination = defaults.CALLBACK_DESTINATION
    event_id = f"callback-{change.get('pd_event_id') or change['occurred_at']}"
    action = str(change.get("event_type", "state_change"))
    slot = slot_of(destination, dedup_key)
    entry = ["stage", "enqueued", "event_id", event_id, "action", action,
             "destination", destination, "dedup_key", dedup_key]
    retention_ms = int(settings.timeline_retention_seconds * 1000)
    # due at once (claim 0): a worker's dispatcher publishes it within its interval
    result = register_enqueue(client)(
        keys=[keys.event(event_id), keys.mailbox(slot), keys.schedule,
              keys.timeline(incident_id)],
        args=[event_id, slot, json.dumps(change, separators=(",", ":")), 0, retention_ms,
              retention_ms, json.dumps(entry), action, incident_id, os.urandom(12).hex()],
    )
    return None if result == DUPLICATE else event_id
