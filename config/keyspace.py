"""The Redis keyspace: the one place that formats key names.

Every key starts with the configured prefix. A delivery key ("slot") is one
(destination, dedup_key) pair, written `destination/dedup_key`; destination names cannot
contain '/', so the first '/' splits it back.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass


def slot_of(destination: str, dedup_key: str) -> str:
    """The schedule member naming one (destination, dedup_key)."""
    return f"{destination}/{dedup_key}"


def split_slot(slot: str) -> tuple[str, str]:
    """Inverse of `slot_of`."""
    destination, _, dedup_key = slot.partition("/")
    return destination, dedup_key


@functools.lru_cache(maxsize=1024)
def endpoint_id(url: str) -> str:
    """A short, stable name for an Events endpoint (URLs may carry credentials): what its
    circuit keys are named by."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


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

    def suppressed(self, slot: str) -> str:
        """String: present while the slot's trigger was suppressed by maintenance, so its
        acknowledge and resolve are suppressed too."""
        return f"{self.prefix}suppressed:{slot}"

    def reply(self, call_id: str) -> str:
        """String with a TTL: a script call's reply, for a resend of the same call
        (config/idempotent.py)."""
        return f"{self.prefix}reply:{call_id}"

    def uncertain(self, slot: str) -> str:
        """Hash with a TTL: a request of the slot that went out and whose answer was lost
        (its action, until when PagerDuty may still process it): see worker/scripts.py."""
        return f"{self.prefix}uncertain:{slot}"

    def last_sent(self, slot: str) -> str:
        """String: the action of the slot's last event PagerDuty accepted (for coalescing)."""
        return f"{self.prefix}sent:{slot}"

    @property
    def maintenance(self) -> str:
        """Hash: window id -> maintenance window added at run time (JSON)."""
        return f"{self.prefix}maintenance"

    def maintenance_of(self, destination: str) -> str:
        """Set: the ids of one destination's run-time windows (an index of `maintenance`)."""
        return f"{self.prefix}maintenance-of:{destination}"

    @property
    def maintenance_destinations(self) -> str:
        """Set: the destinations that have run-time windows."""
        return f"{self.prefix}maintenance-destinations"

    @property
    def maintenance_version(self) -> str:
        """String: a counter that every change of a run-time window increments."""
        return f"{self.prefix}maintenance-version"

    @property
    def maintenance_changes(self) -> str:
        """Stream (capped): each change's version and the destinations it touched, so
        workers re-read only those."""
        return f"{self.prefix}maintenance-changes"

    def maintenance_held(self, window_id: str) -> str:
        """Set with a TTL: the slots a run-time `hold` window holds, woken when the window
        is removed or replaced."""
        return f"{self.prefix}maintenance-held:{window_id}"

    def maintenance_sync(self, window_id: str) -> str:
        """Hash: how a window stands with PagerDuty (worker/maintenance_sync_state.py): the
        PagerDuty window id, what was sent, status, reason, attempts, next attempt."""
        return f"{self.prefix}maintenance-sync:{window_id}"

    @property
    def maintenance_sync_due(self) -> str:
        """Sorted set: window id -> when its sync is next due (epoch milliseconds; +inf once
        synced): every window with a sync state, so a removed one is found without SCAN."""
        return f"{self.prefix}maintenance-sync-due"

    @property
    def maintenance_sync_lock(self) -> str:
        """String with a TTL: the token of the one worker reconciling windows with PagerDuty."""
        return f"{self.prefix}maintenance-sync-lock"

    def timeline(self, incident_id: str) -> str:
        """Stream: every stage of every event of one MoniTao incident."""
        return f"{self.prefix}timeline:{incident_id}"

    def rate_window(self, destination: str) -> str:
        """Sorted set: the send times in the last 60 s for one destination's routing key."""
        return f"{self.prefix}rate:{destination}"

    def rate_waiting(self, destination: str) -> str:
        """Sorted set: slots waiting for one destination's budget, by their oldest event."""
        return f"{self.prefix}ratewait:{destination}"

    def cooldown(self, destination: str) -> str:
        """Hash: the fleet-wide back-off of one destination after a 429."""
        return f"{self.prefix}cooldown:{destination}"

    def circuit(self, endpoint: str) -> str:
        """Hash: one Events endpoint's failures in a row and open interval."""
        return f"{self.prefix}circuit:{endpoint}"

    def circuit_waiting(self, endpoint: str) -> str:
        """Set with a TTL: slots to wake when the endpoint's circuit closes."""
        return f"{self.prefix}circuit-wait:{endpoint}"

    @property
    def circuit_waking(self) -> str:
        """Set with a TTL: the endpoints whose circuit closed with slots still waiting on it,
        woken batch by batch by the dispatchers."""
        return f"{self.prefix}circuit-waking"

    def circuit_probe(self, endpoint: str) -> str:
        """String with a TTL: the token of the one request probing an open circuit."""
        return f"{self.prefix}circuit-probe:{endpoint}"

    @property
    def circuit_log(self) -> str:
        """Stream: every circuit opening and closing, for operators."""
        return f"{self.prefix}circuit-log"

    @property
    def hold_prefix(self) -> str:
        """`hold(slot)` without the slot, for scripts that wake many slots."""
        return self.hold("")

    def queue(self, name: str) -> str:
        """List: a Celery queue on the broker (kombu writes it under the same prefix)."""
        return f"{self.prefix}{name}"

    @property
    def webhook_inbox(self) -> str:
        """Stream: verified PagerDuty webhook bodies waiting for a receiver's processor."""
        return f"{self.prefix}webhook-inbox"

    def webhook_seen(self, webhook_id: str) -> str:
        """String with a TTL: present once a webhook delivery (X-Webhook-Id) was queued."""
        return f"{self.prefix}webhook-seen:{webhook_id}"

    def webhook_event_seen(self, event_id: str) -> str:
        """String with a TTL: present once a webhook with this signed `event.id` was queued
        (a replay under another X-Webhook-Id is a duplicate too)."""
        return f"{self.prefix}webhook-event-seen:{event_id}"

    @property
    def webhook_unmatched(self) -> str:
        """Stream (capped): webhooks that matched no MoniTao incident, or were not events."""
        return f"{self.prefix}webhook-unmatched"

    def webhook_pd_incident(self, pd_incident_id: str) -> str:
        """String with a TTL: the dedup_key of a PagerDuty incident, learnt from its webhooks
        (for events such as `incident.annotated` whose data carries no incident_key)."""
        return f"{self.prefix}webhook-pd-incident:{pd_incident_id}"

    def webhook_subscription(self, subscription_id: str) -> str:
        """Hash: one PagerDuty webhook subscription made by `webhooks subscribe`: its
        destination, service id, url, description, sealed secret, created_at."""
        return f"{self.prefix}webhook-subscription:{subscription_id}"

    @property
    def webhook_subscriptions(self) -> str:
        """Sorted set: subscription id -> when it was made (epoch milliseconds)."""
        return f"{self.prefix}webhook-subscriptions"

    @property
    def webhook_subscriptions_version(self) -> str:
        """String: a counter bumped by every change of the stored subscriptions (receivers
        re-read their secrets when it moved)."""
        return f"{self.prefix}webhook-subscriptions-version"

    def rest_rate(self, token_fingerprint: str, minute: int) -> str:
        """String with a TTL: the incident lookups made with one API token (by its
        fingerprint) in one minute (epoch minutes)."""
        return f"{self.prefix}rest-rate:{token_fingerprint}:{minute}"

    def api_token(self, digest: str) -> str:
        """Hash: one API token (by the SHA-256 hex of the token): name, scopes, created_at.
        The token itself is never stored."""
        return f"{self.prefix}token:{digest}"

    @property
    def api_token_names(self) -> str:
        """Hash: API token name -> the SHA-256 hex of its token (listing and revoking)."""
        return f"{self.prefix}token-names"

    def activity(self, minute: int) -> str:
        """Hash with a TTL: the fleet's deliveries in one minute (epoch minutes) by outcome,
        and latency buckets (worker/activity.py)."""
        return f"{self.prefix}activity:{minute}"

    def console_session(self, digest: str) -> str:
        """Hash with a TTL: one console session (by the SHA-256 hex of its cookie): the
        digest of the API token it signed in with, and its CSRF token."""
        return f"{self.prefix}console-session:{digest}"

    @property
    def intake(self) -> str:
        """Stream: alert events pushed by producers in any language (`XADD ... event JSON`),
        read by every worker's intake consumer in one consumer group."""
        return f"{self.prefix}intake"

    @property
    def intake_lease(self) -> str:
        """String with a TTL: the token of the one intake consumer taking entries now."""
        return f"{self.prefix}intake-lease"
    # --- the destination registry (config/registry.py) ---------------------------------------

    def destination(self, name: str) -> str:
        """Hash: one run-time destination's settings, its sealed routing key, `version`,
        `created_at`, `updated_at`."""
        return f"{self.prefix}destination:{name}"

    @property
    def destination_names(self) -> str:
        """Sorted set (all scores 0, so ordered by name): every run-time destination."""
        return f"{self.prefix}destinations"

    def account_destinations(self, account: str) -> str:
        """Sorted set (all scores 0): the run-time destinations of one account."""
        return f"{self.prefix}account-destinations:{account}"

    @property
    def rest_checks(self) -> str:
        """Hash: destination name -> the last check of its REST credentials (JSON)."""
        return f"{self.prefix}rest-checks"

    @property
    def rest_version(self) -> str:
        """String: a counter bumped by every registry change of a destination that has (or
        had) REST credentials: what the maintenance sync follows, not every change."""
        return f"{self.prefix}rest-version"

    @property
    def rest_destinations(self) -> str:
        """Sorted set (all scores 0): the run-time destinations with REST credentials."""
        return f"{self.prefix}rest-destinations"

    def service_destinations(self, service_id: str) -> str:
        """Sorted set (all scores 0): the run-time destinations with REST credentials for
        one PagerDuty service (webhooks of that service find their credentials here)."""
        return f"{self.prefix}service-destinations:{service_id}"

    @property
    def registry_version(self) -> str:
        """String: a counter bumped by every change of the registry (workers poll it)."""
        return f"{self.prefix}registry-version"

    @property
    def registry_channel(self) -> str:
        """Pub/sub channel (not a key): `version name` of every registry change."""
        return f"{self.prefix}registry"

    @property
    def registry_key_ids(self) -> str:
        """Hash: key id -> how many run-time destinations' routing keys it seals."""
        return f"{self.prefix}registry-key-ids"

    @property
    def registry_endpoints(self) -> str:
        """Hash: endpoint id -> how many run-time destinations post to that endpoint."""
        return f"{self.prefix}registry-endpoints"

    def destination_removed(self, name: str) -> str:
        """String with a TTL: present after a run-time destination was removed, so its
        pending events are dead-lettered as `destination_removed`."""
        return f"{self.prefix}destination-removed:{name}"
