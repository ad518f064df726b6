"""The Redis keyspace: the one place that formats key names.

Every key starts with the configured prefix. A delivery key ("slot") is one
(destination, dedup_key) pair, written `destination/dedup_key`; destination names cannot
contain '/', so the first '/' splits it back.
"""

from __future__ import annotations

from dataclasses import dataclass


def slot_of(destination: str, dedup_key: str) -> str:
    """The schedule member naming one (destination, dedup_key)."""
    return f"{destination}/{dedup_key}"


def split_slot(slot: str) -> tuple[str, str]:
    """Inverse of `slot_of`."""
    destination, _, dedup_key = slot.partition("/")
    return destination, dedup_key


@dataclass(frozen=True)
class Keyspace:
    """Builds every Redis key the fleet uses, under one prefix."""

    prefix: str

    @property
    def schedule(self) -> str:
        """Sorted set: slot -> when it is next due (epoch milliseconds)."""
        return f"{self.prefix}schedule"

    @property
    def dead_letters(self) -> str:
        """Sorted set: event id -> when it was dead-lettered (epoch milliseconds)."""
        return f"{self.prefix}dead"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key under the prefix (for tests and cleanup)."""
        return f"{self.prefix}*"

    def event(self, event_id: str) -> str:
        """Hash: one event, its state, attempts and outcome."""
        return f"{self.prefix}event:{event_id}"

    def mailbox(self, slot: str) -> str:
        """List: the pending event ids of one slot, oldest first."""
        return f"{self.prefix}mailbox:{slot}"

    def lease(self, slot: str) -> str:
        """String with a TTL: the token of the worker delivering this slot."""
        return f"{self.prefix}lease:{slot}"

    def hold(self, slot: str) -> str:
        """String with a TTL: present while the slot backs off after a failed attempt."""
        return f"{self.prefix}hold:{slot}"

    def timeline(self, incident_id: str) -> str:
        """Stream: every stage of every event of one MoniTao incident."""
        return f"{self.prefix}timeline:{incident_id}"

    def rate_window(self, destination: str) -> str:
        """Sorted set: the send times in the last 60 s for one destination's routing key."""
        return f"{self.prefix}rate:{destination}"

    def cooldown(self, destination: str) -> str:
        """Hash: the fleet-wide back-off of one destination after a 429."""
        return f"{self.prefix}cooldown:{destination}"
