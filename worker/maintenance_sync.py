"""MoniTao's maintenance windows reconciled with PagerDuty's, on each destination's service.

Every worker process runs a `MaintenanceSync` daemon thread; one worker at a time does a
pass (a Redis lock, config/locks.py). A pass reads every window (the file's and the
run-time ones), the sync states (worker/maintenance_sync_state.py) and, fresh from Redis,
the destinations they name, then for each window of a whole destination with REST
credentials (and `sync` on):

- no PagerDuty window yet, or the one known is over (a weekly window's past occurrence):
  look for an open window on the service whose description carries the window's marker
  and adopt it, else create one (`POST`). Looking first makes a create whose answer was
  lost harmless: the next pass finds the window instead of making a second one;
- a known window whose start, end or description changed: update it (`PUT`; gone: create);
- a window removed in MoniTao, no longer synchronised, or whose destination lost its REST
  credentials or was removed: delete PagerDuty's (a future one is deleted, an ongoing one
  ends), with the credentials kept in the state when the destination's are gone; then the
  state is dropped. A one-off window already over needs nothing.

A failure leaves the state `pending` (retryable: an outage, a 429, a 5xx, no answer) or
`failed` (401, 403, 404, 400), tried again with a backoff doubling up to the cap; a failed
one at the cap's pace, and at once when the destination's credentials change. A pass runs
every `maintenance_sync_seconds`, within about a second of a change of a window or of a
destination with REST credentials (other registry changes cost nothing), and when a retry
is due. It never blocks deliveries (its own thread and REST clients, bounded by the REST
timeout) and never crashes the worker: an error is one safe log line.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis

from config import defaults
from config.destinations import API_TOKEN_CONTEXT, Destination
from config.errors import ConfigurationError, UndecryptableError
from config.keyspace import Keyspace
from config.locks import RedisLock
from config.lookup import DestinationLookup
from config.maintenance import MaintenanceWindow
from config.pagerduty_rest import PagerDutyRest, RestCredentials, RestError
from config.secrets import KeyRing
from worker.maintenance import all_windows
from worker.maintenance_sync_state import (
    SyncState,
    Target,
    credentials_digest,
    drop_state,
    fleet_id,
    marker,
    next_due_ms,
    not_synced,
    read_states,
    target_of,
    write_state,
)

if TYPE_CHECKING:
    from worker.context import FleetContext

log = logging.getLogger(__name__)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _same_time(text: Any, moment: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(text)) == moment
    except ValueError:
        return False


class _Failed(Exception):
    """An attempt failed: its reason (one safe line) and whether to retry soon."""

    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason, self.retryable = reason, retryable


class MaintenanceSync:
    """Reconciles windows with PagerDuty: `run_once` for one pass, `start` for the thread."""

    def __init__(self, client: redis.Redis, keys: Keyspace, destinations: DestinationLookup, *,
                 key_ring: KeyRing | None = None, ca_file: Any = None,
                 timeout: float = defaults.REST_TIMEOUT_SECONDS,
                 attempts: int = defaults.REST_ATTEMPTS,
                 period_seconds: float = defaults.MAINTENANCE_SYNC_SECONDS,
                 retry_seconds: float = defaults.MAINTENANCE_SYNC_RETRY_SECONDS,
                 retry_cap_seconds: float = defaults.MAINTENANCE_SYNC_RETRY_CAP_SECONDS,
                 lock_seconds: float = defaults.MAINTENANCE_SYNC_LOCK_SECONDS,
                 poll_seconds: float = defaults.MAINTENANCE_SYNC_POLL_SECONDS) -> None:
        self.client, self.keys, self.destinations = client, keys, destinations
        self.fleet = fleet_id(keys)
        self.key_ring, self.ca_file, self.timeout, self.attempts = (key_ring, ca_file, timeout,
                                                                    attempts)
        self.period_seconds, self.poll_seconds = period_seconds, poll_seconds
        self.retry_seconds, self.retry_cap_seconds = retry_seconds, retry_cap_seconds
        self.lock = RedisLock(client, keys.maintenance_sync_lock, lock_seconds)
        self._renewed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # set after each pass this thread made or saw made elsewhere (tests wait on it)
        self.passes = 0

    @classmethod
    def for_fleet(cls, fleet: FleetContext) -> MaintenanceSync:
        """The reconciler of a worker process, on its settings, Redis and destinations."""
        s = fleet.settings
        return cls(fleet.redis, fleet.keys, fleet.destinations, key_ring=s.key_ring(),
                   ca_file=s.rest_ca_file, timeout=s.rest_timeout_seconds,
                   attempts=s.rest_attempts, period_seconds=s.maintenance_sync_seconds,
                   retry_seconds=s.maintenance_sync_retry_seconds,
                   retry_cap_seconds=s.maintenance_sync_retry_cap_seconds)

    # --- the thread -------------------------------------------------------------------------

    def start(self) -> MaintenanceSync:
        """Start the daemon thread (idempotent)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="monitao-maintenance-sync",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait for it (a REST call under way ends first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        seen: tuple[Any, ...] | None = None
        next_pass = 0.0
        # a retry still due after a pass (its window could not be tried) waits for the
        # period's pass instead of calling for a pass at every poll
        stale_due = None
        failing = False
        while not self._stop.is_set():
            try:
                versions = self._versions()
                retry_due = versions[2] <= time.time() * 1000 and versions[2] != stale_due
                due = (versions[:2] != (seen or (None, None))[:2]
                       or time.monotonic() >= next_pass or retry_due)
                if due:
                    seen, next_pass = versions, time.monotonic() + self.period_seconds
                    if self.run_once() is not None:
                        after = next_due_ms(self.client, self.keys)
                        stale_due = after if after <= time.time() * 1000 else None
                    self.passes += 1
                if failing:
                    log.info("maintenance sync: Redis reachable again")
                    failing = False
            except Exception as exc:  # noqa: BLE001 - the worker must outlive anything here
                if not failing:
                    log.warning("maintenance sync: pass failed (%s); retrying",
                                exc.__class__.__name__)
                failing = True
            self._stop.wait(self.poll_seconds * (8 if failing else 1))

    def _versions(self) -> tuple[Any, ...]:
        """What calls for a pass, in one round trip: the windows' version, the version of
        the destinations with REST credentials (not every registry change: adding
        destinations without them never costs a pass), the next retry."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.maintenance_version)
        pipe.get(self.keys.rest_version)
        pipe.zrange(self.keys.maintenance_sync_due, 0, 0, withscores=True)
        version, rest, first = pipe.execute()
        return version, rest, float(first[0][1]) if first else math.inf

    # --- one pass ---------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> Counter[str] | None:
        """One pass over every window; what it did (`created`, `updated`, `adopted`,
        `deleted`, `dropped`, `failed`, `unchanged`, `waiting`), or None when another worker
        holds the lock."""
        if not self.lock.acquire():
            return None
        self._renewed_at = time.monotonic()
        try:
            return self._pass(now or datetime.now(UTC))
        finally:
            self.lock.release()

    def _pass(self, now: datetime) -> Counter[str]:
        done: Counter[str] = Counter()
        windows = all_windows(self.client, self.keys,
                              (d for _, d in self.destinations.file_items()))
        states = read_states(self.client, self.keys)
        destinations = self._load({w.destination for w in windows}
                                  | {s.destination for s in states.values()})
        clients: dict[str, PagerDutyRest] = {}
        try:
            for window in windows:
                if not self._still_holding():
                    break
                state = states.pop(window.id, None)
                done[self._guarded(self._reconcile, window.id, window,
                                   destinations.get(window.destination), state, now,
                                   clients)] += 1
            for state in states.values():  # windows removed in MoniTao
                if not self._still_holding():
                    break
                done[self._guarded(self._retire, state.window_id, state,
                                   destinations.get(state.destination), now, clients)] += 1
        finally:
            for rest in clients.values():
                rest.close()
        return done

    def _guarded(self, step: Any, window_id: str, *args: Any) -> str:
        try:
            return str(step(*args))
        except redis.RedisError:
            raise
        except Exception as exc:  # noqa: BLE001 - one window must not stop the others
            log.warning("maintenance sync: window %s: unexpected %s", window_id,
                        exc.__class__.__name__)
            return "failed"

    def _still_holding(self) -> bool:
        if time.monotonic() - self._renewed_at < self.lock.ttl_ms / 3000:
            return True
        self._renewed_at = time.monotonic()
        if self.lock.renew():
            return True
        log.warning("maintenance sync: lock lost mid-pass; another worker takes over")
        return False

    def _load(self, names: Iterable[str]) -> dict[str, Destination | None]:
        """The destinations named, the file's and the registry's read now (not cached: a
        change of credentials counts from this pass on)."""
        found: dict[str, Destination | None] = {}
        wanted = []
        for name in names:
            if not name:
                continue
            file = self.destinations.file.get(name)
            if file is not None:
                found[name] = file
            else:
                wanted.append(name)
        if wanted:
            found.update(self.destinations.registry.load_many(sorted(wanted)))
        return found

    # --- one window -------------------------------------------------------------------------

    def _reconcile(self, window: MaintenanceWindow, destination: Destination | None,
                   state: SyncState | None, now: datetime,
                   clients: dict[str, PagerDutyRest]) -> str:
        if not_synced(window, destination) is not None:
            return self._retire(state, destination, now, clients) if state else "unchanged"
        assert destination is not None
        target = target_of(window, now, self.fleet)
        if target is None:  # a one-off window over: PagerDuty's ended with it
            if state is not None and state.status != "synced":
                drop_state(self.client, self.keys, window.id)  # nothing left to retry
                return "dropped"
            return "unchanged"
        credentials = credentials_digest(destination)
        if state is not None and state.pd_id and (
                state.service_id, state.api_url) != (destination.pagerduty_service_id,
                                                     destination.api_url):
            # moved to another service: take it off the old one first
            if self._retire(state, destination, now, clients) not in ("deleted", "dropped"):
                return "waiting"
            state = None
        now_ms = _ms(now)
        if state is not None:
            if state.status == "synced" and state.fingerprint == target.fingerprint:
                return "unchanged"
            # a synced window that changed goes at once; a failed attempt waits its backoff,
            # unless the destination's credentials changed since (a fixed token heals it)
            healed = state.status == "failed" and state.credentials != credentials
            if state.status != "synced" and now_ms < state.next_at_ms and not healed:
                return "waiting"
        base = state or SyncState(window.id, window.destination)
        base = replace(base, destination=window.destination, credentials=credentials,
                       **self._where(destination))
        try:
            rest = self._rest(destination, clients)
            known = base.pd_id if base.pd_id and base.end_ms > now_ms else ""
            pd_id, done = self._put(rest, window.id, known, target)
        except _Failed as exc:
            failed = base.with_failure(exc.reason, exc.retryable, now_ms,
                                       base_seconds=self.retry_seconds,
                                       cap_seconds=self.retry_cap_seconds)
            write_state(self.client, self.keys, failed)
            log.warning("maintenance sync: window %s (%s): %s", window.id, window.destination,
                        failed.shown())
            return "failed"
        write_state(self.client, self.keys, replace(
            base, pd_id=pd_id, fingerprint=target.fingerprint, start_ms=_ms(target.start),
            end_ms=_ms(target.end), status="synced", reason="", attempts=0, next_at_ms=0))
        log.info("maintenance sync: window %s (%s) %s as PagerDuty window %s", window.id,
                 window.destination, done, pd_id)
        return done

    def _put(self, rest: PagerDutyRest, window_id: str, known: str,
             target: Target) -> tuple[str, str]:
        """Make PagerDuty's window match `target`; its id and what was done."""
        try:
            if known:
                updated = rest.update_maintenance_window(known, target.start, target.end,
                                                         target.description)
                if updated is not None:
                    return known, "updated"
            adopted = self._adopt(rest, window_id, target)
            if adopted is not None:
                return adopted, "adopted"
            created = rest.create_maintenance_window(target.start, target.end,
                                                     target.description)
            return str(created["id"]), "created"
        except RestError as exc:
            raise _Failed(exc.reason, exc.retryable) from None
        except (KeyError, TypeError):
            raise _Failed("PagerDuty's answer has no window id", True) from None

    def _adopt(self, rest: PagerDutyRest, window_id: str, target: Target) -> str | None:
        """An open window of the service carrying the window's marker (one a create whose
        answer was lost made), brought to `target`; extra ones are deleted. None: none."""
        sign = marker(window_id, self.fleet)
        found = [w for w in rest.maintenance_windows()
                 if sign in str(w.get("description") or "") and w.get("id")]
        if not found:
            return None
        keep, *extra = found
        for duplicate in extra:
            rest.delete_maintenance_window(str(duplicate["id"]))
        pd_id = str(keep["id"])
        if (keep.get("description") == target.description
                and _same_time(keep.get("start_time"), target.start)
                and _same_time(keep.get("end_time"), target.end)):
            return pd_id
        updated = rest.update_maintenance_window(pd_id, target.start, target.end,
                                                 target.description)
        return pd_id if updated is not None else None

    def _retire(self, state: SyncState, destination: Destination | None, now: datetime,
                clients: dict[str, PagerDutyRest]) -> str:
        """Take PagerDuty's window of a window no longer synchronised off the service, then
        drop its state."""
        now_ms = _ms(now)
        if not state.pd_id or state.end_ms <= now_ms:
            drop_state(self.client, self.keys, state.window_id)
            return "dropped"
        credentials = credentials_digest(destination) if destination and \
            destination.has_rest else state.credentials
        healed = state.status == "failed" and state.credentials != credentials
        if state.status != "synced" and now_ms < state.next_at_ms and not healed:
            return "waiting"
        try:
            rest = self._retiring_rest(state, destination, clients)
            if rest is None:
                log.warning("maintenance sync: window %s (%s): PagerDuty window %s left in "
                            "place (no REST credentials to delete it with)", state.window_id,
                            state.destination, state.pd_id)
                drop_state(self.client, self.keys, state.window_id)
                return "dropped"
            rest.delete_maintenance_window(state.pd_id)
        except (RestError, _Failed) as exc:
            retryable = exc.retryable
            failed = state.with_failure(exc.reason, retryable, now_ms,
                                        base_seconds=self.retry_seconds,
                                        cap_seconds=self.retry_cap_seconds,
                                        credentials=credentials)
            write_state(self.client, self.keys, failed)
            log.warning("maintenance sync: window %s (%s) removed, deleting PagerDuty window "
                        "%s: %s", state.window_id, state.destination, state.pd_id,
                        failed.shown())
            return "failed"
        drop_state(self.client, self.keys, state.window_id)
        log.info("maintenance sync: window %s (%s) removed; PagerDuty window %s deleted",
                 state.window_id, state.destination, state.pd_id)
        return "deleted"

    # --- REST clients -------------------------------------------------------------------------

    @staticmethod
    def _where(destination: Destination) -> dict[str, str]:
        """What the state keeps to delete PagerDuty's window once the destination is gone."""
        sealed = destination.sealed_api_token
        return {"service_id": destination.pagerduty_service_id or "",
                "api_url": destination.api_url, "from_email": destination.pagerduty_from or "",
                "sealed_token": sealed.stored if sealed is not None else ""}

    def _rest(self, destination: Destination, clients: dict[str, PagerDutyRest]) -> PagerDutyRest:
        """The pass's client for `destination`; `_Failed` when its token cannot be opened."""
        rest = clients.get(destination.name)
        if rest is None:
            try:
                credentials = RestCredentials.of(destination.with_key_ring(self.key_ring))
            except (UndecryptableError, ConfigurationError) as exc:
                raise _Failed(f"the API token cannot be opened: {exc}", False) from None
            if credentials is None:
                raise _Failed("the destination has no REST credentials", False)
            rest = self._client(credentials)
            clients[destination.name] = rest
        return rest

    def _retiring_rest(self, state: SyncState, destination: Destination | None,
                       clients: dict[str, PagerDutyRest]) -> PagerDutyRest | None:
        """A client for the service the state's window is on: the destination's while it
        still has credentials there, else the state's (its sealed token); None: neither."""
        if destination is not None and destination.has_rest and (
                destination.pagerduty_service_id, destination.api_url) == (state.service_id,
                                                                           state.api_url):
            return self._rest(destination, clients)
        if not state.sealed_token or not state.service_id:
            return None
        if self.key_ring is None:
            raise _Failed("MONITAO_PD_SECRET_KEYS is not set here: the API token kept to "
                          "delete the window cannot be opened", False)
        try:
            token = self.key_ring.open(state.sealed_token,
                                       API_TOKEN_CONTEXT.format(name=state.destination))
        except UndecryptableError as exc:
            raise _Failed(f"the API token cannot be opened: {exc}", False) from None
        rest = self._client(RestCredentials(state.destination, state.service_id,
                                            state.api_url, state.from_email or None, token))
        clients[f"window {state.window_id}"] = rest  # closed with the pass's others
        return rest

    def _client(self, credentials: RestCredentials) -> PagerDutyRest:
        try:
            return PagerDutyRest(credentials, ca_file=self.ca_file, timeout=self.timeout,
                                 attempts=self.attempts)
        except RestError as exc:
            raise _Failed(exc.reason, False) from None
