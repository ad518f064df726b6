"""How each maintenance window stands with PagerDuty: the policy (which windows are
synchronised, what PagerDuty's window should be, the backoff) and the sync state kept in
Redis, as `maintenance list`, the API, the console and `status` show it.

One hash per window id (`Keyspace.maintenance_sync`) and one sorted set of the ids that
have state, scored by when each is next due (`maintenance_sync_due`; +inf once synced), so
the reconciler (worker/maintenance_sync.py) finds a removed window's state without SCAN and
every worker learns from one ZRANGE whether a retry is due. The state holds the PagerDuty
window id, the occurrence and the fingerprint of what was sent, the status (`synced`,
`pending`, `failed`) with a one-line reason, the attempts and the next attempt time, and
what is needed to delete the PagerDuty window once the destination is gone: its service,
API URL, From email and, for a run-time destination, its API token still sealed (the same
ciphertext the registry holds, opened only with the fleet's key ring). Never a token in
clear.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any, Literal

import redis

from config.destinations import Destination
from config.keyspace import Keyspace
from config.maintenance import MaintenanceWindow
from config.text import printable

Status = Literal["synced", "pending", "failed"]
# Why a window is not synchronised (shown as `not synced: ...`); a destination without REST
# credentials shows no sync state at all.
NO_REST = "the destination has no PagerDuty REST credentials"
SOME_MONITORS = "covers only some monitors"
SYNC_OFF = "sync = false"
ALREADY_OVER = "already over"
DESCRIPTION_CHARS = 200  # of the reason, in PagerDuty's description
REASON_CHARS = 300
PAGE = 1000


def marker(window_id: str, fleet: str = "") -> str:
    """What PagerDuty's window description carries to name its MoniTao window: the window
    id and `fleet` (`fleet_id`), so two fleets sharing a PagerDuty service (production and
    staging, say) never adopt, change or delete each other's windows."""
    return f"[monitao:{fleet}:{window_id}]" if fleet else f"[monitao:{window_id}]"


def fleet_id(keys: Keyspace) -> str:
    """A short, stable name of the fleet (a hash of its key prefix) for `marker`."""
    return hashlib.sha256(keys.prefix.encode()).hexdigest()[:6]


@dataclass(frozen=True)
class Target:
    """The PagerDuty window a MoniTao window calls for now."""

    start: datetime
    end: datetime
    description: str

    @property
    def fingerprint(self) -> str:
        """A short digest of what is sent: a change of any part means an update."""
        text = f"{self.start.isoformat()}|{self.end.isoformat()}|{self.description}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def not_synced(window: MaintenanceWindow, destination: Destination | None) -> str | None:
    """None when the window is synchronised to PagerDuty; else why not (NO_REST, ...)."""
    if destination is None or not destination.has_rest:
        return NO_REST
    if window.monitors:
        return SOME_MONITORS  # a PagerDuty window silences the whole service
    if not window.sync:
        return SYNC_OFF
    return None


def target_of(window: MaintenanceWindow, now: datetime, fleet: str = "") -> Target | None:
    """PagerDuty's window for `window` at `now`: a one-off window's span until it ends, a
    weekly one's current occurrence while active, else its next; None once a one-off is
    over."""
    span = window.occurrence(now)
    if span is None:
        return None
    reason = printable(window.reason or window.describe())[:DESCRIPTION_CHARS]
    return Target(span[0], span[1],
                  f"MoniTao maintenance: {reason} {marker(window.id, fleet)}")


def backoff_ms(attempts: int, retryable: bool, *, base_seconds: float,
               cap_seconds: float) -> int:
    """The pause before the next attempt after `attempts` failed ones: doubling from the
    base to the cap; a failure that is not retryable (401, 403, 404, 400) waits the cap."""
    if not retryable:
        return int(cap_seconds * 1000)
    return int(min(cap_seconds, base_seconds * 2 ** min(max(attempts - 1, 0), 30)) * 1000)


def credentials_digest(destination: Destination) -> str:
    """A digest of the destination's REST credentials (the token by its fingerprint): a
    failed window is tried again at once when it changes."""
    info = destination.api_token_info() or {}
    text = "|".join(str(part) for part in (
        destination.pagerduty_service_id, destination.api_url, destination.pagerduty_from,
        info.get("fingerprint")))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SyncState:
    """One window's sync state, as stored."""

    window_id: str
    destination: str
    service_id: str = ""
    api_url: str = ""
    from_email: str = ""
    sealed_token: str = ""  # a run-time destination's API token, sealed (never in clear)
    credentials: str = ""  # credentials_digest of the destination when last tried
    pd_id: str = ""  # PagerDuty's window id ('' when none is known)
    fingerprint: str = ""  # Target.fingerprint of what PagerDuty's window holds
    start_ms: int = 0  # the occurrence PagerDuty's window is for
    end_ms: int = 0
    status: Status = "pending"
    reason: str = ""
    attempts: int = 0
    next_at_ms: int = 0

    @classmethod
    def parse(cls, window_id: str, stored: Mapping[str, str]) -> SyncState | None:
        """The state a stored hash holds (None when it is empty)."""
        if not stored:
            return None
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {"window_id": window_id, "destination": ""}
        for name, value in stored.items():
            if name in known and name != "window_id":
                values[name] = int(float(value or 0)) if name.endswith(("_ms", "attempts")) \
                    else value
        if values.get("status") not in ("synced", "pending", "failed"):
            values["status"] = "pending"
        return cls(**values)

    def fields(self) -> dict[str, str]:
        """The hash to store."""
        return {name: str(value) for name, value in asdict(self).items()
                if name != "window_id"}

    @property
    def due_score(self) -> float:
        """Its score in the due set: the next attempt, or +inf once synced."""
        return math.inf if self.status == "synced" else float(self.next_at_ms)

    def shown(self) -> str:
        """The state in a few words: `synced`, `pending`, `failed: why`."""
        return f"failed: {self.reason}" if self.status == "failed" else self.status

    def with_failure(self, reason: str, retryable: bool, now_ms: int, *,
                     base_seconds: float, cap_seconds: float,
                     credentials: str | None = None) -> SyncState:
        """This state after a failed attempt."""
        attempts = self.attempts + 1
        return replace(
            self, status="pending" if retryable else "failed",
            reason=printable(reason)[:REASON_CHARS], attempts=attempts,
            credentials=self.credentials if credentials is None else credentials,
            next_at_ms=now_ms + backoff_ms(attempts, retryable, base_seconds=base_seconds,
                                           cap_seconds=cap_seconds))


# --- the store ------------------------------------------------------------------------------

def write_state(client: redis.Redis, keys: Keyspace, state: SyncState) -> None:
    """Store a window's state (replacing the previous one) and its due time."""
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.maintenance_sync(state.window_id))
    pipe.hset(keys.maintenance_sync(state.window_id), mapping=state.fields())
    pipe.zadd(keys.maintenance_sync_due, {state.window_id: state.due_score})
    pipe.execute()


def drop_state(client: redis.Redis, keys: Keyspace, window_id: str) -> None:
    """Forget a window's state."""
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.maintenance_sync(window_id))
    pipe.zrem(keys.maintenance_sync_due, window_id)
    pipe.execute()


def read_states(client: redis.Redis, keys: Keyspace,
                window_ids: Iterable[str] | None = None) -> dict[str, SyncState]:
    """The states of `window_ids` (default: every window with one), a page at a time."""
    found: dict[str, SyncState] = {}
    for page in _pages(client, keys, window_ids):
        pipe = client.pipeline(transaction=False)
        for window_id in page:
            pipe.hgetall(keys.maintenance_sync(window_id))
        for window_id, stored in zip(page, pipe.execute(), strict=True):
            state = SyncState.parse(window_id, stored)
            if state is not None:
                found[window_id] = state
    return found


def _pages(client: redis.Redis, keys: Keyspace,
           window_ids: Iterable[str] | None) -> Iterator[list[str]]:
    if window_ids is not None:
        ids = list(window_ids)
        for start in range(0, len(ids), PAGE):
            yield ids[start:start + PAGE]
        return
    offset = 0
    while page := client.zrange(keys.maintenance_sync_due, offset, offset + PAGE - 1):
        yield page
        offset += PAGE


def next_due_ms(client: redis.Redis, keys: Keyspace) -> float:
    """When the earliest window is due for another attempt (epoch ms; inf: none is)."""
    first = client.zrange(keys.maintenance_sync_due, 0, 0, withscores=True)
    return float(first[0][1]) if first else math.inf


# --- what the doors show ----------------------------------------------------------------------

def sync_column(window: MaintenanceWindow, destination: Destination | None,
                state: SyncState | None, now: datetime,
                fleet: str = "") -> tuple[str | None, str | None]:
    """A window's `sync` (`synced`, `pending`, `failed: why`, `not synced: why`, or None for
    a destination without REST credentials) and its PagerDuty window id (`fleet`: the
    fleet's `fleet_id`, as the reconciler marks windows)."""
    why = not_synced(window, destination)
    pd_id = state.pd_id or None if state is not None else None
    if why == NO_REST:
        return None, pd_id
    if why is not None:
        return f"not synced: {why}", pd_id
    target = target_of(window, now, fleet)
    if state is None:
        return ("pending" if target is not None else f"not synced: {ALREADY_OVER}"), None
    if state.status == "synced" and target is not None \
            and state.fingerprint != target.fingerprint:
        return "pending", pd_id  # changed since: the next pass updates it
    return state.shown(), pd_id


def sync_summary(client: redis.Redis, keys: Keyspace) -> dict[str, Any]:
    """Counts of windows synced, pending and failed on PagerDuty, and the first failure."""
    counts = {"synced": 0, "pending": 0, "failed": 0}
    first_failure = None
    for state in sorted(read_states(client, keys).values(), key=lambda s: s.window_id):
        counts[state.status] += 1
        if state.status == "failed" and first_failure is None:
            first_failure = f"window {state.window_id} ({state.destination}): {state.reason}"
    return {**counts, "first_failure": first_failure}
