"""Webhook subscriptions made for the user, and their secrets as the receiver holds them.

`Subscriptions` is the one implementation behind `monitao-pd webhooks subscribe`,
`unsubscribe` and `subscriptions`: it creates a webhooks v3 subscription for a destination's
PagerDuty service through its REST credentials (config/pagerduty_rest.py), keeps the
signing secret PagerDuty returns only then sealed with the key ring (context
`webhook-subscription:<id>`), deletes it, and lists the stored ones with their status at
PagerDuty. In Redis (config/keyspace.py):

    webhook-subscription:<id>        hash: destination, service_id, url, description,
                                     secret (sealed), created_at (epoch ms)
    webhook-subscriptions            sorted set: id -> created_at
    webhook-subscriptions-version    counter bumped in the same transaction as each change

`SubscriptionSecrets` is the receiver's copy of the opened secrets: it looks at the version
counter at most about once a second (and at once after a signature failure, at most every
0.1 s) and re-reads the secrets only when the counter moved, so a subscription is accepted,
and an unsubscribed one refused, within about a second of the change and without a restart.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import redis

from config import defaults
from config.destinations import Destination
from config.errors import (
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RemoteError,
    UndecryptableError,
)
from config.keyspace import Keyspace
from config.lookup import DestinationLookup, fleet_lookup
from config.pagerduty_rest import PagerDutyRest, RestError, rest_client
from config.secrets import KeyRing, stored_key_id
from config.settings import Settings
from config.text import printable

log = logging.getLogger(__name__)

SECRET_CONTEXT = "webhook-subscription:{id}"
# PagerDuty's ids are a few capital letters and digits; an id is part of a key name and of
# a REST path, so anything else is refused.
SUBSCRIPTION_ID = re.compile(r"[A-Za-z0-9]{1,64}")
MAX_URL_CHARS = 2048
MAX_DESCRIPTION_CHARS = 200
# The attempts of each REST call these commands make (a person is waiting).
ATTEMPTS = 2

ACTIVE = "active"
TEMPORARILY_DISABLED = "temporarily disabled"
INACTIVE = "inactive"
DELETED = "deleted at PagerDuty"

# A client for a destination's REST credentials (tests pass their own).
RestFactory = Callable[[Destination], PagerDutyRest | None]


@dataclass(frozen=True)
class Subscription:
    """One stored subscription; `status` once asked of PagerDuty (`active`, `temporarily
    disabled`, `inactive`, `deleted at PagerDuty`, or `unknown: <why>`)."""

    id: str
    destination: str
    service_id: str
    url: str
    description: str
    created_at: str
    status: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON fields (`--json`)."""
        return asdict(self)


@dataclass(frozen=True)
class Unsubscription:
    """What `unsubscribe` did: `at_pagerduty` is `deleted`, `already gone` or `not asked`
    (`forget`: the destination can no longer call PagerDuty)."""

    id: str
    destination: str
    at_pagerduty: str

    def as_dict(self) -> dict[str, Any]:
        """The outcome as JSON fields."""
        return asdict(self)


def secret_context(subscription_id: str) -> str:
    """What a subscription's secret is sealed for: a sealed secret copied onto another
    subscription does not open."""
    return SECRET_CONTEXT.format(id=subscription_id)


class Subscriptions:
    """The stored webhook subscriptions of one fleet, and the calls that change them."""

    def __init__(self, client: redis.Redis, settings: Settings, *,
                 destinations: DestinationLookup | None = None,
                 rest: RestFactory | None = None) -> None:
        self.client, self.settings = client, settings
        self.keys = Keyspace(settings.key_prefix)
        self._destinations = destinations
        self._rest = rest or self._rest_client

    @property
    def destinations(self) -> DestinationLookup:
        """The file's and the registry's destinations (read on first use)."""
        if self._destinations is None:
            self._destinations = fleet_lookup(self.settings, self.client)
        return self._destinations

    # --- changing ---------------------------------------------------------------------------

    def subscribe(self, destination: str, url: str,
                  description: str | None = None) -> Subscription:
        """Subscribe `url` to the incident events of `destination`'s PagerDuty service, keep
        the secret sealed and return the stored record. Raises ConfigurationError (no key
        ring: nothing is asked of PagerDuty), InvalidInputError (the URL or description),
        NotFoundError (no such destination), ConflictError (no REST credentials; the URL is
        already subscribed for it), UndecryptableError (its token), RemoteError."""
        ring = self._ring()
        url = _checked_url(url)
        description = (description or f"MoniTao fleet: acknowledgements of {destination}")
        if len(description) > MAX_DESCRIPTION_CHARS or printable(description) != description:
            raise InvalidInputError([f"--description: at most {MAX_DESCRIPTION_CHARS} "
                                     "characters, without control characters"])
        target = self._destination(destination)
        for existing in self.stored():
            if existing.destination == destination and existing.url == url:
                raise ConflictError(f"{url} is already subscribed for {destination} as "
                                    f"{existing.id} (unsubscribe it first)", code="exists")
        with self._client(target) as rest:
            try:
                made, secret = rest.create_webhook_subscription(url, description)
            except RestError as exc:
                raise RemoteError(exc.reason, retryable=exc.retryable) from None
            subscription_id = made.get("id")
            if not isinstance(subscription_id, str) or not SUBSCRIPTION_ID.fullmatch(
                    subscription_id):
                self._undo(rest, subscription_id)
                raise RemoteError("POST /webhook_subscriptions: PagerDuty's answer has no "
                                  "usable id; the subscription was deleted again")
            created = int(time.time() * 1000)
            fields = {"destination": destination, "service_id": rest.service_id, "url": url,
                      "description": description, "created_at": str(created),
                      "secret": ring.seal(secret, secret_context(subscription_id))}
            del secret
            try:
                pipe = self.client.pipeline(transaction=True)
                pipe.hset(self.keys.webhook_subscription(subscription_id), mapping=fields)
                pipe.zadd(self.keys.webhook_subscriptions, {subscription_id: created})
                pipe.incr(self.keys.webhook_subscriptions_version)
                pipe.execute()
            except redis.RedisError:
                # a subscription whose secret nobody keeps would only send refused webhooks
                self._undo(rest, subscription_id)
                raise
        log.info("webhooks: subscribed %s for destination %s (service %s) as %s",
                 printable(url), destination, rest.service_id, subscription_id)
        return _record(subscription_id, fields)

    def unsubscribe(self, subscription_id: str, *, forget: bool = False) -> Unsubscription:
        """Delete the subscription at PagerDuty (one already gone there is fine) and here.
        `forget`: delete it here only (its destination can no longer call PagerDuty).
        Raises NotFoundError (not stored), ConflictError (its destination cannot call
        PagerDuty and `forget` is not given), UndecryptableError, RemoteError (nothing is
        deleted here: run it again)."""
        stored = self.get(subscription_id)
        at_pagerduty = "not asked"
        if not forget:
            target = self.destinations.get(stored.destination)
            if target is None or not target.has_rest:
                why = "no longer exists" if target is None else "has no REST credentials"
                raise ConflictError(
                    f"destination {stored.destination} {why}, so {subscription_id} cannot "
                    "be deleted at PagerDuty; delete it in PagerDuty's web UI and run "
                    "`unsubscribe --forget`", code="conflict")
            with self._client(target) as rest:
                try:
                    deleted = rest.delete_webhook_subscription(subscription_id)
                except RestError as exc:
                    raise RemoteError(exc.reason, retryable=exc.retryable) from None
            at_pagerduty = "deleted" if deleted else "already gone"
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.webhook_subscription(subscription_id))
        pipe.zrem(self.keys.webhook_subscriptions, subscription_id)
        pipe.incr(self.keys.webhook_subscriptions_version)
        pipe.execute()
        log.info("webhooks: unsubscribed %s (at PagerDuty: %s)", subscription_id, at_pagerduty)
        return Unsubscription(subscription_id, stored.destination, at_pagerduty)

    def reencrypt(self) -> tuple[int, dict[str, str]]:
        """Reseal every stored secret under the first key of the ring (with `destinations
        reencrypt`, before an older key is dropped); (how many were resealed, id -> why
        for those that could not be opened)."""
        ring = self._ring()
        resealed, failed = 0, {}
        ids = self.client.zrange(self.keys.webhook_subscriptions, 0, -1)
        for subscription_id in ids:
            key = self.keys.webhook_subscription(subscription_id)
            stored = self.client.hget(key, "secret")
            if not stored or stored_key_id(stored) == ring.primary_id:
                continue
            context = secret_context(subscription_id)
            try:
                fresh = ring.seal(ring.open(stored, context), context)
            except UndecryptableError as exc:
                failed[subscription_id] = str(exc)
                continue
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, "secret", fresh)
            pipe.incr(self.keys.webhook_subscriptions_version)
            pipe.execute()
            resealed += 1
        return resealed, failed

    # --- reading ----------------------------------------------------------------------------

    def get(self, subscription_id: str) -> Subscription:
        """One stored subscription (no status); NotFoundError when none has this id."""
        if not SUBSCRIPTION_ID.fullmatch(subscription_id):
            raise NotFoundError(f"no stored webhook subscription {printable(subscription_id)}")
        fields = self.client.hgetall(self.keys.webhook_subscription(subscription_id))
        if not fields:
            raise NotFoundError(f"no stored webhook subscription {subscription_id} "
                                "(monitao-pd webhooks subscriptions lists them)")
        return _record(subscription_id, fields)

    def stored(self) -> list[Subscription]:
        """Every stored subscription, oldest first, without asking PagerDuty."""
        ids = self.client.zrange(self.keys.webhook_subscriptions, 0, -1)
        pipe = self.client.pipeline(transaction=False)
        for subscription_id in ids:
            pipe.hgetall(self.keys.webhook_subscription(subscription_id))
        return [_record(subscription_id, fields)
                for subscription_id, fields in zip(ids, pipe.execute(), strict=True) if fields]

    def listing(self) -> list[Subscription]:
        """Every stored subscription with its status at PagerDuty (one call each)."""
        found = self.stored()
        by_destination: dict[str, list[Subscription]] = {}
        for subscription in found:
            by_destination.setdefault(subscription.destination, []).append(subscription)
        statuses: dict[str, str] = {}
        for name, subscriptions in by_destination.items():
            statuses.update(self._statuses(name, subscriptions))
        return [Subscription(**{**s.as_dict(), "status": statuses[s.id]}) for s in found]

    def _statuses(self, name: str, subscriptions: list[Subscription]) -> Iterator[
            tuple[str, str]]:
        target = self.destinations.get(name)
        if target is None or not target.has_rest:
            why = f"destination {name} " + ("no longer exists" if target is None
                                            else "has no REST credentials")
            yield from ((s.id, f"unknown: {why}") for s in subscriptions)
            return
        try:
            rest = self._client(target)
        except (UndecryptableError, ConfigurationError, RemoteError) as exc:
            why = "; ".join(exc.problems) if isinstance(exc, ConfigurationError) else str(exc)
            yield from ((s.id, f"unknown: {printable(why)}") for s in subscriptions)
            return
        with rest:
            for subscription in subscriptions:
                try:
                    found = rest.webhook_subscription(subscription.id)
                except RestError as exc:
                    yield subscription.id, f"unknown: {exc.reason}"
                    continue
                yield subscription.id, status_of(found)

    # --- helpers ----------------------------------------------------------------------------

    def _ring(self) -> KeyRing:
        ring = self.settings.key_ring()
        if ring is None:
            raise ConfigurationError([
                "MONITAO_PD_SECRET_KEYS is not set: it seals the subscription's secret in "
                "Redis (monitao-pd secrets generate-key); nothing was asked of PagerDuty"])
        return ring

    def _destination(self, name: str) -> Destination:
        target = self.destinations.get(name)
        if target is None:
            raise NotFoundError(f"no destination {printable(name)} (known: "
                                f"{self.destinations.describe_names()})")
        if not target.has_rest:
            raise ConflictError(f"destination {name} has no REST credentials "
                                "(pagerduty_service_id and an API token)", code="conflict")
        return target

    def _client(self, destination: Destination) -> PagerDutyRest:
        try:
            rest = self._rest(destination)
        except RestError as exc:
            raise RemoteError(exc.reason) from None
        if rest is None:
            raise ConflictError(f"destination {destination.name} has no REST credentials")
        return rest

    def _rest_client(self, destination: Destination) -> PagerDutyRest | None:
        return rest_client(destination, ca_file=self.settings.rest_ca_file,
                           timeout=self.settings.rest_timeout_seconds, attempts=ATTEMPTS)

    @staticmethod
    def _undo(rest: PagerDutyRest, subscription_id: object) -> None:
        if isinstance(subscription_id, str) and SUBSCRIPTION_ID.fullmatch(subscription_id):
            try:
                rest.delete_webhook_subscription(subscription_id)
            except RestError as exc:
                log.error("webhooks: subscription %s could not be deleted again (%s); delete "
                          "it in PagerDuty's web UI", subscription_id, exc.reason)


def status_of(subscription: dict[str, Any] | None) -> str:
    """A subscription's status as PagerDuty describes it (None: it has none of that id)."""
    if subscription is None:
        return DELETED
    method = subscription.get("delivery_method")
    if isinstance(method, dict) and method.get("temporarily_disabled") is True:
        return TEMPORARILY_DISABLED
    if subscription.get("active") is False:
        return INACTIVE
    return ACTIVE


def _checked_url(url: str) -> str:
    try:
        parts = urlsplit(url) if len(url) <= MAX_URL_CHARS else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname or \
            printable(url) != url or " " in url:
        raise InvalidInputError([f"--url: {printable(url)[:100]!s} is not an http(s) URL "
                                 f"of at most {MAX_URL_CHARS} characters (PagerDuty posts "
                                 "its webhooks there; it must be public and https)"])
    return url


def _record(subscription_id: str, fields: dict[str, str]) -> Subscription:
    created = fields.get("created_at", "")
    when = (datetime.fromtimestamp(int(created) / 1000, UTC).isoformat(timespec="seconds")
            if created.isdigit() else "")
    return Subscription(subscription_id, fields.get("destination", ""),
                        fields.get("service_id", ""), fields.get("url", ""),
                        fields.get("description", ""), when)


class SubscriptionSecrets:
    """The opened secrets of the stored subscriptions, as one receiver process holds them.

    `current()` answers from memory; `refresh()` (blocking Redis I/O: call it from a worker
    thread) reads the version counter when due and re-reads the secrets when it moved. A
    secret that does not open is logged once and skipped; a Redis error keeps what was read.
    """

    def __init__(self, client: redis.Redis, keys: Keyspace, key_ring: KeyRing | None, *,
                 check_seconds: float = defaults.WEBHOOK_SECRETS_CHECK_SECONDS,
                 recheck_seconds: float = defaults.WEBHOOK_SECRETS_RECHECK_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.keys, self.key_ring = client, keys, key_ring
        self.check_seconds, self.recheck_seconds, self.clock = (check_seconds,
                                                                recheck_seconds, clock)
        self._secrets: tuple[str, ...] = ()
        self._version: str | None = None
        self._checked_at = -math.inf
        self._lock = threading.Lock()
        self._reported: set[tuple[str, str]] = set()
        self._redis_failing = False

    def __repr__(self) -> str:
        return f"SubscriptionSecrets({len(self._secrets)} secret(s), version {self._version})"

    def current(self) -> tuple[str, ...]:
        """The secrets read last (no I/O)."""
        return self._secrets

    def due(self, *, failed: bool = False) -> bool:
        """Whether `refresh` would read the counter now (`failed`: after a signature
        failure, which may mean a subscription was just made)."""
        interval = self.recheck_seconds if failed else self.check_seconds
        return self.clock() - self._checked_at >= interval

    def refresh(self, *, failed: bool = False) -> bool:
        """Read the version counter if due, and the secrets if it moved; return whether the
        secrets changed."""
        with self._lock:
            if not self.due(failed=failed):
                return False
            try:
                version = self.client.get(self.keys.webhook_subscriptions_version) or "0"
                self._checked_at = self.clock()
                if version == self._version:
                    return False
                secrets = self._read()
            except redis.RedisError as exc:
                if not self._redis_failing:
                    log.warning("webhooks: the subscriptions' secrets could not be read "
                                "(%s); the ones read before are used", exc.__class__.__name__)
                self._redis_failing = True
                self._checked_at = self.clock()
                return False
            self._redis_failing = False
            changed = secrets != self._secrets
            self._secrets, self._version = secrets, version
            return changed

    def _read(self) -> tuple[str, ...]:
        ids = self.client.zrange(self.keys.webhook_subscriptions, 0, -1)
        pipe = self.client.pipeline(transaction=False)
        for subscription_id in ids:
            pipe.hget(self.keys.webhook_subscription(subscription_id), "secret")
        opened = []
        for subscription_id, stored in zip(ids, pipe.execute(), strict=True):
            if not stored:
                continue
            if self.key_ring is None:
                self._report(subscription_id, stored, "MONITAO_PD_SECRET_KEYS is not set in "
                             "this process")
                continue
            try:
                opened.append(self.key_ring.open(stored, secret_context(subscription_id)))
            except UndecryptableError as exc:
                self._report(subscription_id, stored, str(exc))
        return tuple(opened)

    def _report(self, subscription_id: str, stored: str, why: str) -> None:
        if (subscription_id, stored) in self._reported:
            return
        self._reported.add((subscription_id, stored))
        log.error("webhooks: the secret of subscription %s cannot be opened (%s); webhooks "
                  "signed with it are refused", printable(subscription_id), printable(why))
