"""Incident lookups: the incident_key of a webhook that carries none, asked of PagerDuty.

Some webhook bodies (older payload versions, notes) have no `data.incident_key`. When no
earlier webhook of the same PagerDuty incident gave it, and a destination with REST
credentials for the incident's service (`data.service.id`) exists, the processor asks
`GET /incidents/{id}` (config/pagerduty_rest.py) and remembers the answer under the same key
earlier webhooks teach (`webhook-pd-incident:<id>`, for a day), so later webhooks of the
incident need no lookup.

Lookups happen in the processor, never in the receiver's HTTP handler, and each is bounded
(the REST timeout, two attempts). They are rate-limited per API token: a counter per token
fingerprint and minute in Redis, shared by every receiver; over it, or when PagerDuty fails
in a way that may pass, `LookupDeferred` is raised and the entry is retried later under the
processor's bounded-failure rule.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from config import defaults
from config.destinations import Destination
from config.errors import ConfigurationError, UndecryptableError
from config.keyspace import Keyspace
from config.lookup import DestinationLookup, fleet_lookup
from config.pagerduty_rest import PagerDutyRest, RestError, rest_client
from config.secrets import fingerprint
from config.settings import Settings
from config.text import printable
from webhooks.events import as_text

log = logging.getLogger(__name__)

# PagerDuty's incident and service ids: letters and digits. Anything else is not asked (the
# id is part of a REST path and of key names).
PLAIN_ID = re.compile(r"[A-Za-z0-9]{1,64}")

RestFactory = Callable[[Destination], PagerDutyRest | None]


class LookupDeferred(Exception):
    """The lookup cannot be made now (the token's rate limit, PagerDuty unavailable): the
    entry is retried later. `counts`: whether the deferral uses up one of the entry's
    attempts (PagerDuty failing does; waiting for the token's budget does not, so a storm
    of key-less webhooks is matched late rather than set aside)."""

    def __init__(self, message: str, *, counts: bool = True) -> None:
        super().__init__(message)
        self.counts = counts


@dataclass(frozen=True)
class Found:
    """The outcome of a lookup: the incident's `key`, or why there is none (`reason`)."""

    key: str | None = None
    reason: str = ""


class IncidentLookup:
    """Looks up PagerDuty incidents with the REST credentials of their service."""

    def __init__(self, client: redis.Redis, settings: Settings, *,
                 destinations: DestinationLookup | None = None,
                 rest: RestFactory | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.client, self.settings = client, settings
        self.keys = Keyspace(settings.key_prefix)
        self.per_minute = settings.webhook_lookups_per_minute
        self.cache_ms = int(settings.webhook_lookup_cache_seconds * 1000)
        self._destinations = destinations
        self._rest = rest or self._rest_client
        self.clock = clock
        self._reported: set[str] = set()

    @property
    def destinations(self) -> DestinationLookup:
        """The file's and the registry's destinations (read on first use)."""
        if self._destinations is None:
            self._destinations = fleet_lookup(self.settings, self.client)
        return self._destinations

    def credentials_for(self, service_id: str) -> list[str]:
        """The destinations with REST credentials for `service_id` (none for an odd id)."""
        if not PLAIN_ID.fullmatch(service_id):
            return []
        return self.destinations.registry.for_service(service_id)

    def incident_key(self, pd_incident: str, service_id: str) -> Found | None:
        """The incident_key of PagerDuty incident `pd_incident`, remembered for later
        webhooks; None when no destination can ask (today's behaviour: unmatched). Raises
        `LookupDeferred` when it should be asked again later."""
        names = self.credentials_for(service_id)
        if not names or not PLAIN_ID.fullmatch(pd_incident):
            return None
        reasons = []
        for name in names:
            destination = self.destinations.get(name)
            if destination is None or not destination.has_rest:
                continue
            try:
                rest = self._rest(destination)
            except (UndecryptableError, ConfigurationError, RestError) as exc:
                self._report(name, exc)
                continue
            if rest is None:
                continue
            with rest:
                self._take(rest.credentials.token)
                try:
                    incident = rest.incident(pd_incident)
                except RestError as exc:
                    if exc.retryable:
                        raise LookupDeferred(f"GET /incidents/{pd_incident}: "
                                             f"{exc.reason}") from None
                    reasons.append(f"{name}: {exc.reason}")
                    continue
            if incident is None:
                return Found(reason=f"PagerDuty has no incident {pd_incident} "
                                    f"(GET /incidents with destination {name}'s token)")
            key = incident.get("incident_key")
            if not isinstance(key, str) or not key:
                return Found(reason=f"PagerDuty's incident {pd_incident} has no "
                                    "incident_key")
            key = as_text(key)
            self.client.set(self.keys.webhook_pd_incident(pd_incident), key, px=self.cache_ms)
            log.info("webhooks: looked up PagerDuty incident %s with destination %s's token",
                     pd_incident, name)
            return Found(key=key)
        if reasons:
            return Found(reason="the lookup was refused: " + "; ".join(reasons)[:400])
        return None

    def _take(self, token: str) -> None:
        """Count one lookup against the token's budget for this minute, or defer it."""
        minute = int(self.clock() // 60)
        key = self.keys.rest_rate(fingerprint(token), minute)
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, 120)
        count = int(pipe.execute()[0])
        if count > self.per_minute:
            raise LookupDeferred(f"over {self.per_minute} incident lookups this minute for "
                                 "this API token; tried again later", counts=False)

    def _report(self, name: str, exc: Exception) -> None:
        if name in self._reported:
            return
        self._reported.add(name)
        why = "; ".join(exc.problems) if isinstance(exc, ConfigurationError) else str(exc)
        log.warning("webhooks: destination %s cannot look incidents up: %s", name,
                    printable(why))

    def _rest_client(self, destination: Destination) -> PagerDutyRest | None:
        return rest_client(destination, ca_file=self.settings.rest_ca_file,
                           timeout=self.settings.rest_timeout_seconds,
                           attempts=defaults.WEBHOOK_LOOKUP_ATTEMPTS)
