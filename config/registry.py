"""The destination registry: destinations added, changed and removed at run time, in Redis.

Each run-time destination is one hash (`keys.destination(name)`) holding the same settings a
file destination has (validated by the same `Destination` model), its routing key sealed
with the key ring (config/secrets.py) and described by its length and fingerprint,
`version`, `created_at` and `updated_at`. A sorted set of names, and one per account, list
them in pages. Every change is one script that also bumps the registry's version counter
and publishes `version name` on the registry channel: workers drop that destination from
their cache at once (config/lookup.py), and the counter, polled, catches a lost message.

Names are unique across the file and the registry; the file's destinations are read-only
here. Removing a destination leaves a tombstone, so its pending events end `dead_lettered`
with reason `destination_removed` (replayable once a destination of that name is added
again), wakes their keys so that happens at once, and deletes its rate window, waiting
room, 429 cooldown and run-time maintenance windows; its endpoint's circuit goes too when
no destination posts there any more (circuits are per endpoint URL, shared by the
destinations that use it).

Every door (CLI, HTTP API) calls `Registry`; it raises the project's errors and returns
`DestinationRecord`s, which the doors only render.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config import defaults
from config.destinations import (
    API_TOKEN_CONTEXT,
    NAME_PATTERN,
    Destination,
    SealedKey,
    api_token_problem,
    routing_key_problem,
    validation_problems,
)
from config.errors import (
    ConfigurationError,
    ConflictError,
    InvalidDestinationError,
    NotFoundError,
    UndecryptableError,
)
from config.idempotent import IdempotentScript
from config.keyspace import Keyspace, endpoint_id, split_slot
from config.secrets import KEY_RING_VARIABLE, KeyRing, fingerprint, stored_key_id
from config.settings import Settings
from worker import paging

# The settings a run-time destination has (the file's, less maintenance windows, which are
# run-time windows: `monitao-pd maintenance add`).
SETTINGS = ("region", "events_url", "source", "client", "client_url", "rate_limit_per_minute",
            "severity_map", "coalesce", "account", "pagerduty_service_id", "pagerduty_from",
            "pagerduty_api_url")
# The fields a lookup reads (HMGET: a third of HGETALL's reply to parse, on a cache miss).
LOADED = (*SETTINGS, "routing_key", "routing_key_length", "routing_key_fingerprint",
          "api_token", "api_token_length", "api_token_fingerprint")
# Settings that may be cleared (set back to their default) by an update; clearing
# `pagerduty_service_id` drops the REST credentials, API token included.
CLEARABLE = ("events_url", "client_url", "account", "pagerduty_service_id", "pagerduty_from",
             "pagerduty_api_url")
API_TOKEN_FIELDS = ("api_token", "api_token_length", "api_token_fingerprint")
PAGE = 500
MAX_PAGE = 5000
CHANGE_ATTEMPTS = 10
# Cursors of destination pages (worker/paging.py): a cursor of another list is refused.
CURSOR_KIND = "destinations"

NOTHING_TO_CHANGE = "nothing to change: give a setting or a routing key"
NO_KEY_RING = (f"{KEY_RING_VARIABLE} is not set: routing keys of run-time destinations are "
               "stored encrypted with it (make one with `monitao-pd secrets generate-key`)")

# KEYS: 1 destination, 2 names, 3 key ids, 4 endpoints, 5 registry version, 6 tombstone,
#       7 destinations with REST credentials, 8 REST version
# ARGV: 1 name, 2 mode (add|update), 3 expected version ('' = any), 4 fields (JSON object of
#       strings; '' deletes the field), 5 account set key prefix, 6 channel, 7 service set
#       key prefix
# Adds or changes a destination, keeps the account and service sets, key-id and endpoint
# counts in step,
# drops any tombstone, bumps the registry version and publishes `version name`. Returns
# {'ok', destination version, registry version, created_at, updated_at}, or {'exists'},
# {'missing'}, {'changed'}.
PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exists = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[2] == 'add' and exists then return {'exists'} end
if ARGV[2] == 'update' then
  if not exists then return {'missing'} end
  if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'version') ~= ARGV[3] then
    return {'changed'}
  end
end
local old = redis.call('HMGET', KEYS[1], 'account', 'key_id', 'endpoint_id',
                      'pagerduty_service_id')
for k, v in pairs(cjson.decode(ARGV[4])) do
  if v == '' then redis.call('HDEL', KEYS[1], k) else redis.call('HSET', KEYS[1], k, v) end
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
if not exists then redis.call('HSET', KEYS[1], 'created_at', now) end
redis.call('HSET', KEYS[1], 'updated_at', now)
local new = redis.call('HMGET', KEYS[1], 'account', 'key_id', 'endpoint_id',
                      'pagerduty_service_id')
redis.call('ZADD', KEYS[2], 0, ARGV[1])
if old[1] and old[1] ~= new[1] then redis.call('ZREM', ARGV[5] .. old[1], ARGV[1]) end
if new[1] then redis.call('ZADD', ARGV[5] .. new[1], 0, ARGV[1]) end
if old[4] and old[4] ~= new[4] then redis.call('ZREM', ARGV[7] .. old[4], ARGV[1]) end
if new[4] then
  redis.call('ZADD', ARGV[7] .. new[4], 0, ARGV[1])
  redis.call('ZADD', KEYS[7], 0, ARGV[1])
else
  redis.call('ZREM', KEYS[7], ARGV[1])
end
if old[4] or new[4] then redis.call('INCR', KEYS[8]) end
for i, counts in ipairs({KEYS[3], KEYS[4]}) do
  local before, after = old[i + 1], new[i + 1]
  if before ~= after then
    if before and redis.call('HINCRBY', counts, before, -1) <= 0 then
      redis.call('HDEL', counts, before)
    end
    if after then redis.call('HINCRBY', counts, after, 1) end
  end
end
redis.call('DEL', KEYS[6])
local registry_version = redis.call('INCR', KEYS[5])
redis.call('PUBLISH', ARGV[6], registry_version .. ' ' .. ARGV[1])
return {'ok', version, registry_version, redis.call('HGET', KEYS[1], 'created_at'), now}
"""

# KEYS: 1 destination, 2 names, 3 key ids, 4 endpoints, 5 registry version, 6 tombstone,
#       7 rate window, 8 waiting room, 9 cooldown, 10 destinations with REST credentials,
#       11 REST version
# ARGV: 1 name, 2 account set key prefix, 3 channel, 4 tombstone ttl ms, 5 service set
#       key prefix
# Removes a destination and its budget state, leaves the tombstone, bumps and publishes.
# Returns {'removed', endpoint id, destinations still posting to it}, or {'missing'}.
REMOVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local old = redis.call('HMGET', KEYS[1], 'account', 'key_id', 'endpoint_id',
                      'pagerduty_service_id')
redis.call('DEL', KEYS[1], KEYS[7], KEYS[8], KEYS[9])
redis.call('ZREM', KEYS[2], ARGV[1])
if old[1] then redis.call('ZREM', ARGV[2] .. old[1], ARGV[1]) end
if old[4] then
  redis.call('ZREM', ARGV[5] .. old[4], ARGV[1])
  redis.call('INCR', KEYS[11])
end
redis.call('ZREM', KEYS[10], ARGV[1])
local function decrement(counts, member)
  if not member then return 0 end
  local left = redis.call('HINCRBY', counts, member, -1)
  if left <= 0 then redis.call('HDEL', counts, member); return 0 end
  return left
end
decrement(KEYS[3], old[2])
local left = decrement(KEYS[4], old[3])
redis.call('SET', KEYS[6], '1', 'PX', ARGV[4])
local registry_version = redis.call('INCR', KEYS[5])
redis.call('PUBLISH', ARGV[3], registry_version .. ' ' .. ARGV[1])
return {'removed', old[3] or '', left}
"""

# KEYS: schedule   ARGV: hold key prefix, slot...
# Makes each slot due now (one due earlier, or gone from the schedule, is left alone) and
# ends its backoff, so the events of a removed destination are dead-lettered at once.
WAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local woken = 0
for i = 2, #ARGV do
  redis.call('DEL', ARGV[1] .. ARGV[i])
  woken = woken + redis.call('ZADD', KEYS[1], 'XX', 'LT', 'CH', now, ARGV[i])
end
return woken
"""


FINGERPRINT = "3f2a9c1e"
CREATED = "2026-11-27T14:10:03.686000Z"
RECORD_EXAMPLE: dict[str, Any] = {
    "name": "acme-prod", "origin": "registry", "read_only": False, "account": "acme",
    "region": "us", "events_url": None, "url": "https://events.pagerduty.com/v2/enqueue",
    "source": "MoniTao", "client": "MoniTao", "client_url": None,
    "rate_limit_per_minute": 120, "severity_map": {"critical": "critical", "minor": "warning"},
    "coalesce": False, "maintenance_windows": 0,
    "routing_key": {"origin": "registry", "variable": None, "resolved": True, "length": 32,
                    "fingerprint": FINGERPRINT, "key_id": "9d41c07b"},
    "version": 1, "created_at": CREATED, "updated_at": CREATED}
STATE_EXAMPLE: dict[str, Any] = {
    "pending_events": 0, "rate_window_requests": 12, "rate_waiting_keys": 0,
    "cooling_down": False, "cooldown_remaining_seconds": 0.0, "circuit": "closed",
    "circuit_failures": 0, "dead_letters": {"rejected": 1}}


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class RoutingKeyInfo(BaseModel):
    """A routing key described, never shown: where it comes from, its length, the first 8
    hex digits of its SHA-256, and (run-time destinations) the id of the key sealing it."""

    model_config = _examples(RECORD_EXAMPLE["routing_key"], {
        "origin": "env", "variable": "PD_KEY_PROD", "resolved": False, "length": None,
        "fingerprint": None, "key_id": None})

    origin: Literal["registry", "env", "inline"]
    variable: str | None = None
    resolved: bool
    length: int | None = None
    fingerprint: str | None = None
    key_id: str | None = None


class DestinationRecord(BaseModel):
    """One destination as every door shows it (the routing key only described). The file's
    are `read_only`: edit the file and restart the fleet to change them."""

    model_config = _examples(RECORD_EXAMPLE)

    name: str
    origin: Literal["file", "registry"]
    read_only: bool
    account: str | None
    region: str
    events_url: str | None
    url: str
    source: str
    client: str
    client_url: str | None
    rate_limit_per_minute: int
    severity_map: dict[str, str]
    coalesce: bool
    maintenance_windows: int = Field(description="windows the destinations file gives it")
    routing_key: RoutingKeyInfo
    pagerduty_service_id: str | None = Field(
        None, description="the PagerDuty service of PagerDuty's REST API calls")
    pagerduty_from: str | None = None
    pagerduty_api_url: str | None = Field(None, description="the REST API's base URL")
    pagerduty_api_token: RoutingKeyInfo | None = Field(
        None, description="the REST API token described, never shown (None: no token)")
    version: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def of(cls, destination: Destination, meta: Mapping[str, str] | None = None) -> (
            DestinationRecord):
        """The record of a destination, with the registry's `version` and times if given."""
        meta = meta or {}
        return cls(
            name=destination.name, origin=destination.origin,
            read_only=destination.origin == "file", account=destination.account,
            region=destination.region, events_url=destination.events_url, url=destination.url,
            source=destination.source, client=destination.client,
            client_url=destination.client_url,
            rate_limit_per_minute=destination.rate_limit_per_minute,
            severity_map=dict(destination.severity_map), coalesce=destination.coalesce,
            maintenance_windows=len(destination.maintenance),
            routing_key=RoutingKeyInfo(**destination.routing_key_info()),
            pagerduty_service_id=destination.pagerduty_service_id,
            pagerduty_from=destination.pagerduty_from,
            pagerduty_api_url=destination.api_url if destination.has_rest else None,
            pagerduty_api_token=(RoutingKeyInfo(**info) if (info := destination.api_token_info())
                                 else None),
            version=int(meta["version"]) if meta.get("version") else None,
            created_at=_time(meta.get("created_at")), updated_at=_time(meta.get("updated_at")),
        )


class DestinationFigures(BaseModel):
    """A destination's figures now: pending events, rate budget use, 429 cooldown, circuit
    of its endpoint, dead letters by reason."""

    model_config = _examples(STATE_EXAMPLE)

    pending_events: int
    rate_window_requests: int = Field(description="requests in the current rate window")
    rate_waiting_keys: int = Field(description="keys waiting for the rate budget")
    cooling_down: bool = Field(description="backing off after PagerDuty's 429")
    cooldown_remaining_seconds: float
    circuit: str = Field(description="closed, open, half_open or unknown")
    circuit_failures: int
    dead_letters: dict[str, int]


class DestinationDetail(DestinationRecord):
    """A destination and its figures now (`monitao-pd destinations show --json`)."""

    model_config = _examples({**RECORD_EXAMPLE, "state": STATE_EXAMPLE})

    state: DestinationFigures


class DestinationPage(BaseModel):
    """A page of destinations (file and registry together) in name order; `next_cursor` is
    null on the last page."""

    model_config = _examples({"destinations": [RECORD_EXAMPLE], "next_cursor": None})

    destinations: list[DestinationRecord]
    next_cursor: str | None


class Removal(BaseModel):
    """What removing a destination did: its pending events (now being dead-lettered as
    `destination_removed`), the keys woken for that, whether its endpoint's circuit state
    went too, and the run-time maintenance windows removed with it."""

    model_config = _examples({"name": "acme-prod", "pending_events": 3, "woken_keys": 2,
                              "circuit_deleted": True, "windows_removed": []})

    name: str
    pending_events: int
    woken_keys: int
    circuit_deleted: bool
    windows_removed: list[str] = Field(default_factory=list)


@dataclass
class Reencryption:
    """What `reencrypt` did: how many destinations, how many resealed under `key_id`, and the
    ones that could not be (name -> why)."""

    key_id: str
    total: int = 0
    resealed: int = 0
    already: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class KeyUsage:
    """Which keys seal the registry's routing keys, and whether this process's ring has them."""

    destinations: int
    by_key_id: dict[str, int]
    ring: tuple[str, ...] | None  # None: MONITAO_PD_SECRET_KEYS not set here

    @property
    def missing(self) -> dict[str, int]:
        """Key ids in use that this ring lacks (all of them without a ring)."""
        return {k: n for k, n in self.by_key_id.items() if self.ring is None or k not in self.ring}

    def as_dict(self) -> dict[str, Any]:
        return {"destinations": self.destinations, "by_key_id": self.by_key_id,
                "ring": list(self.ring) if self.ring is not None else None,
                "missing": self.missing}


@dataclass
class RegistryCheck:
    """What `config check` finds in the registry: the key ids in use, the names that the
    file defines too (the file's is used), and the destinations whose routing key this
    process's ring cannot open (name -> why)."""

    usage: KeyUsage
    clashes: list[str]
    undecryptable: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.clashes and not self.undecryptable


def registry_for(settings: Settings, client: redis.Redis,
                 file_destinations: Mapping[str, Destination] | None = None) -> Registry:
    """The registry of the fleet `settings` describe, as every door opens it: this process's
    key ring (None without `MONITAO_PD_SECRET_KEYS`), the file's destinations, and a
    removed destination's tombstone kept a day past the oldest age an event may reach (its
    events are told apart from a never-known destination's that long)."""
    tombstone = max(defaults.TOMBSTONE_SECONDS, settings.max_event_age_seconds + 86400)
    return Registry(client, Keyspace(settings.key_prefix), key_ring=settings.key_ring(),
                    file_destinations=file_destinations, tombstone_seconds=tombstone,
                    circuit_threshold=settings.circuit_threshold,
                    rate_window_seconds=settings.rate_window_seconds)


class Registry:
    """The run-time destinations of one fleet (its Redis and keyspace), beside the file's.

    `key_ring` seals routing keys (needed to add one, change one, or re-encrypt);
    `file_destinations` are the file's, read-only here and reserved names.
    """

    def __init__(self, client: redis.Redis, keys: Keyspace, *, key_ring: KeyRing | None = None,
                 file_destinations: Mapping[str, Destination] | None = None,
                 tombstone_seconds: float = defaults.TOMBSTONE_SECONDS,
                 circuit_threshold: int = defaults.CIRCUIT_THRESHOLD,
                 rate_window_seconds: float = defaults.RATE_WINDOW_SECONDS) -> None:
        self.client, self.keys, self.key_ring = client, keys, key_ring
        # how `detail` reads a destination's circuit and rate window (the fleet's settings)
        self.circuit_threshold, self.rate_window_seconds = circuit_threshold, rate_window_seconds
        self.file = dict(file_destinations or {})
        self.tombstone_ms = int(tombstone_seconds * 1000)
        # a resend of a change (its reply lost) answers as the change did, not "exists"
        self._put = IdempotentScript(client, PUT, keys)
        self._remove = IdempotentScript(client, REMOVE, keys)
        self._wake = IdempotentScript(client, WAKE, keys)

    # --- reading --------------------------------------------------------------------------

    def load(self, name: str, *, validate: bool = True,
             client: redis.Redis | None = None) -> Destination | None:
        """The run-time destination `name` (its key sealed, not opened), or None. A record
        that no longer validates raises `InvalidDestinationError`. `client`: the connection
        to read with (a worker thread's own), by default the registry's."""
        values = (client or self.client).hmget(self.keys.destination(name), LOADED)
        return self.parse(name, _loaded(values), validate=validate)

    def load_many(self, names: list[str], *,
                  validate: bool = True) -> dict[str, Destination | None]:
        """`load` of several names in one round trip; a record that no longer validates is
        left out (`config check` reports it). Without `validate` (a producer's view) the
        stored settings are taken as written."""
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self.keys.destination(name), LOADED)
        found: dict[str, Destination | None] = {}
        for name, values in zip(names, pipe.execute(), strict=True):
            try:
                found[name] = self.parse(name, _loaded(values), validate=validate)
            except InvalidDestinationError:
                continue
        return found

    def record(self, name: str) -> DestinationRecord:
        """The record of destination `name`, from the file or the registry; NotFoundError."""
        if name in self.file:
            return DestinationRecord.of(self.file[name])
        stored = self.client.hgetall(self.keys.destination(name))
        destination = self.parse(name, stored)
        if destination is None:
            raise NotFoundError(f"no destination {name!r}")
        return DestinationRecord.of(destination, stored)

    def detail(self, name: str) -> DestinationDetail:
        """The record of destination `name` and its figures now: pending events (found by
        a scan of the schedule: a command's cost, not a delivery's), rate budget, cooldown,
        circuit and dead letters. NotFoundError."""
        from worker import dead_letters
        from worker.fleet_state import destination_state

        record = self.record(name)
        pending = sum(self.pending_events(name).values())
        destination = self.file.get(name) or self.load(name)
        state = destination_state(self.client, self.keys, name, destination,
                                  pending_events=pending,
                                  circuit_threshold=self.circuit_threshold,
                                  rate_window_seconds=self.rate_window_seconds)
        dead = dead_letters.counts_by_reason(self.client, self.keys,
                                             dead_letters.Filters(destination=name))
        figures = DestinationFigures(
            pending_events=state.pending_events, rate_window_requests=state.rate_window_requests,
            rate_waiting_keys=state.rate_waiting_keys, cooling_down=state.cooling_down,
            cooldown_remaining_seconds=state.cooldown_remaining_seconds, circuit=state.circuit,
            circuit_failures=state.circuit_failures, dead_letters=dead)
        return DestinationDetail(**record.model_dump(), state=figures)

    def count(self) -> int:
        """How many run-time destinations there are."""
        return int(self.client.zcard(self.keys.destination_names))

    def page(self, *, account: str | None = None, after: str = "",
             limit: int = PAGE) -> tuple[list[DestinationRecord], str | None]:
        """Up to `limit` records in name order after `after` (file and registry together),
        only `account`'s if given, and the name to continue after (None at the end). A
        stored record that no longer validates is left out (`config check` lists it), so a
        page may hold fewer than `limit`."""
        limit = max(1, min(limit, MAX_PAGE))
        names_key = (self.keys.account_destinations(account) if account
                     else self.keys.destination_names)
        low = f"({after}" if after else "-"
        # The registry's names past the first limit + 1 all sort after them: the first
        # `limit` names of both sources together are the page's.
        stored = self.client.zrangebylex(names_key, low, "+", start=0, num=limit + 1)
        from_file = [name for name, destination in self.file.items()
                     if name > after and (account is None or destination.account == account)]
        names = sorted({*stored, *from_file})
        chosen, more = names[:limit], len(names) > limit
        wanted = [name for name in chosen if name not in self.file]
        pipe = self.client.pipeline(transaction=False)
        for name in wanted:
            pipe.hgetall(self.keys.destination(name))
        found = dict(zip(wanted, pipe.execute(), strict=True))
        records = []
        for name in chosen:
            if name in self.file:
                records.append(DestinationRecord.of(self.file[name]))
                continue
            try:
                destination = self.parse(name, found[name])
            except InvalidDestinationError:
                continue  # listed by `config check`; a page shows what it can
            if destination is not None:
                records.append(DestinationRecord.of(destination, found[name]))
        return records, (chosen[-1] if more else None)

    def listing(self, *, account: str | None = None, cursor: str | None = None,
                limit: int = PAGE) -> DestinationPage:
        """A page of records after `cursor` (an opaque `next_cursor` of a previous page; none
        for the first). InvalidInputError for a cursor this never gave."""
        after = paging.decode_cursor(cursor, CURSOR_KIND, 1)[0] if cursor else ""
        records, last = self.page(account=account, after=after, limit=limit)
        return DestinationPage(destinations=records,
                               next_cursor=paging.encode_cursor(CURSOR_KIND, last)
                               if last is not None else None)

    def records(self, *, account: str | None = None) -> Iterator[DestinationRecord]:
        """Every record (file and registry) in name order, read a page at a time."""
        after: str | None = ""
        while after is not None:
            page, after = self.page(account=account, after=after)
            yield from page

    def names(self) -> Iterator[str]:
        """Every run-time destination's name, in order, read a page at a time."""
        after = ""
        while True:
            names = self.client.zrangebylex(self.keys.destination_names,
                                            f"({after}" if after else "-", "+", start=0,
                                            num=PAGE)
            yield from names
            if len(names) < PAGE:
                return
            after = names[-1]

    def key_usage(self) -> KeyUsage:
        """Which key ids seal the stored routing keys, against this process's ring."""
        counts = {k: int(n) for k, n in self.client.hgetall(self.keys.registry_key_ids).items()}
        return KeyUsage(self.count(), dict(sorted(counts.items())),
                        self.key_ring.ids if self.key_ring is not None else None)

    def undecryptable(self) -> dict[str, str]:
        """Run-time destinations whose routing key this ring cannot open (name -> why),
        found by opening each one (not a hot path: `config check`)."""
        found = {}
        for names in _chunks(self.names(), PAGE):
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hmget(self.keys.destination(name), "routing_key", "api_token")
            for name, (stored, token) in zip(names, pipe.execute(), strict=True):
                if stored is None:
                    continue
                if self.key_ring is None:
                    found[name] = NO_KEY_RING
                    continue
                try:
                    self.key_ring.open(stored, name)
                    if token:
                        self.key_ring.open(token, API_TOKEN_CONTEXT.format(name=name))
                except UndecryptableError as exc:
                    found[name] = str(exc)
        return found

    def clashes(self) -> list[str]:
        """Names of the file that the registry holds too (the file's wins: remove one)."""
        names = sorted(self.file)
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.exists(self.keys.destination(name))
        return [name for name, found in zip(names, pipe.execute(), strict=True) if found]

    def check(self) -> RegistryCheck:
        """Check the whole registry against the file and this key ring (not a hot path)."""
        usage = self.key_usage()
        return RegistryCheck(usage, self.clashes(),
                             self.undecryptable() if usage.destinations else {})

    def for_service(self, service_id: str) -> list[str]:
        """The destinations (file's first, then run-time) with REST credentials for the
        PagerDuty service `service_id`: any of them may call the REST API about it."""
        names = [name for name, d in sorted(self.file.items())
                 if d.pagerduty_service_id == service_id and d.has_rest]
        names += self.client.zrange(self.keys.service_destinations(service_id), 0, 49)
        return names

    def rest_names(self, limit: int = MAX_PAGE) -> list[str]:
        """Names of the destinations with REST credentials: the file's, then run-time ones
        in name order (at most `limit` of those)."""
        return ([name for name, d in sorted(self.file.items()) if d.has_rest]
                + self.client.zrange(self.keys.rest_destinations, 0, limit - 1))

    def with_rest(self, limit: int = MAX_PAGE, *,
                  names: list[str] | None = None) -> list[Destination]:
        """The destinations with REST credentials (`rest_names`, or only those of `names`),
        in that order; run-time ones that no longer load are left out."""
        names = self.rest_names(limit) if names is None else names
        loaded = self.load_many([n for n in names if n not in self.file])
        found = [self.file.get(n) or loaded.get(n) for n in names]
        return [d for d in found if d is not None and d.has_rest]

    def removed(self, name: str) -> bool:
        """Whether a run-time destination of this name was removed (its tombstone is there)."""
        return bool(self.client.exists(self.keys.destination_removed(name)))

    # --- changing -------------------------------------------------------------------------

    def add(self, name: str, settings: Mapping[str, Any], routing_key: str | None,
            api_token: str | None = None) -> DestinationRecord:
        """Add a run-time destination (with a REST API token if `api_token`). Raises
        InvalidDestinationError (one problem per line, nothing stored), ConflictError
        (`exists`: the name is taken, here or in the file), ConfigurationError (no key ring
        to seal the routing key)."""
        destination = self.validate_new(name, settings, routing_key, api_token)
        if name in self.file:
            raise ConflictError(code="exists", message=f"destination {name!r} is defined in the "
                                          "destinations file (MONITAO_PD_CONFIG); names are "
                                          "unique across the file and the registry")
        assert routing_key is not None
        fields = self._fields(destination, self._seal(name, routing_key),
                              self._seal_api_token(name, api_token))
        result = self._put(keys=self._put_keys(name),
                           args=[name, "add", "", json.dumps(fields),
                                 self.keys.account_destinations(""),
                                 self.keys.registry_channel,
                                 self.keys.service_destinations("")])
        if result[0] == "exists":
            raise ConflictError(code="exists", message=f"destination {name!r} already exists "
                                          "(`destinations update` changes it)")
        return self._written(destination, fields, result)

    def validate_new(self, name: str, settings: Mapping[str, Any],
                     routing_key: str | None, api_token: str | None = None) -> Destination:
        """The destination `add` would store, validated without storing anything; raises
        InvalidDestinationError naming every problem (field and value, never the key's)."""
        problems = self._name_problems(name)
        if routing_key is None:
            problems.append("routing_key: required")
        destination, more = self._validate(name, dict(settings), routing_key, api_token,
                                           has_token=api_token is not None)
        problems.extend(more)
        if problems or destination is None:
            raise InvalidDestinationError(problems)
        return destination

    def update(self, name: str, changes: Mapping[str, Any], routing_key: str | None = None,
               api_token: str | None = None) -> DestinationRecord:
        """Change what is given of a run-time destination, as a JSON merge patch: a setting
        replaces the stored one, `severity_map` entries merge into the stored map (None
        removes a level), None clears `events_url`, `client_url`, `account` or a REST
        setting (None for `pagerduty_service_id` drops the REST credentials, API token
        included). Raises NotFoundError, ConflictError (`read_only` for the file's),
        InvalidDestinationError, ConfigurationError (a new routing key or API token and no
        key ring). Nothing given at all: InvalidDestinationError."""
        if name in self.file:
            raise ConflictError(code="read_only", message=_read_only(name, "change"))
        if not changes and routing_key is None and api_token is None:
            raise InvalidDestinationError([NOTHING_TO_CHANGE])
        for _ in range(CHANGE_ATTEMPTS):
            stored = self.client.hgetall(self.keys.destination(name))
            if not stored:
                raise NotFoundError(f"no destination {name!r}")
            current = _settings(stored)
            merged = {**current, **{k: v for k, v in changes.items() if k != "severity_map"}}
            if "severity_map" in changes:
                patch = changes["severity_map"]
                if isinstance(patch, Mapping):
                    severity = {**current.get("severity_map", {}), **patch}
                    merged["severity_map"] = {k: v for k, v in severity.items() if v is not None}
                else:
                    merged["severity_map"] = patch
            for name_ in CLEARABLE:
                if name_ in merged and merged[name_] is None:
                    del merged[name_]
            drop_rest = "pagerduty_service_id" not in merged
            has_token = api_token is not None or (bool(stored.get("api_token"))
                                                  and not drop_rest)
            destination, problems = self._validate(name, merged, routing_key, api_token,
                                                   has_token=has_token)
            if problems:
                raise InvalidDestinationError(problems)
            assert destination is not None
            sealed = self._seal(name, routing_key) if routing_key is not None else None
            fields = self._fields(destination, sealed, self._seal_api_token(name, api_token),
                                  drop_api_token=drop_rest)
            result = self._put(keys=self._put_keys(name),
                               args=[name, "update", stored.get("version", ""),
                                     json.dumps(fields), self.keys.account_destinations(""),
                                     self.keys.registry_channel,
                                 self.keys.service_destinations("")])
            if result[0] == "missing":
                raise NotFoundError(f"no destination {name!r}")
            if result[0] == "ok":
                # the keys not given are as stored: describe them from the hash
                fields = {**stored, **fields}
                return self._written(destination, fields, result)
        raise ConflictError(code="changed",
                            message=f"destination {name!r} kept changing; try again")

    def pending_events(self, name: str) -> dict[str, int]:
        """The keys (slots) of `name` with pending events and how many each has. Scans the
        schedule (a command's cost, not a delivery's)."""
        slots = [slot for slot, _ in self.client.zscan_iter(self.keys.schedule,
                                                            match=f"{name}/*", count=1000)
                 if split_slot(slot)[0] == name]
        pipe = self.client.pipeline(transaction=False)
        for slot in slots:
            pipe.llen(self.keys.mailbox(slot))
        return {slot: int(n) for slot, n in zip(slots, pipe.execute(), strict=True) if n}

    def remove(self, name: str, *, confirm: bool = False) -> Removal:
        """Remove a run-time destination. With pending events and no `confirm`, raises
        ConflictError (`pending_events`, with their number) and removes nothing; else they
        are dead-lettered as `destination_removed` at once. NotFoundError, ConflictError
        (`read_only`) for the file's."""
        if name in self.file:
            raise ConflictError(code="read_only", message=_read_only(name, "remove"))
        if not self.client.exists(self.keys.destination(name)):
            raise NotFoundError(f"no destination {name!r}")
        slots = self.pending_events(name)
        pending = sum(slots.values())
        if pending and not confirm:
            raise ConflictError(
                code="pending_events",
                message=f"destination {name!r} has {pending} pending event(s); removing it "
                "dead-letters them as destination_removed (replay them once a destination "
                f"{name!r} is added again): confirm to remove it", pending=pending)
        keys = self.keys
        result = self._remove(
            keys=[keys.destination(name), keys.destination_names, keys.registry_key_ids,
                  keys.registry_endpoints, keys.registry_version, keys.destination_removed(name),
                  keys.rate_window(name), keys.rate_waiting(name), keys.cooldown(name),
                  keys.rest_destinations, keys.rest_version],
            args=[name, keys.account_destinations(""), keys.registry_channel, self.tombstone_ms,
                  keys.service_destinations("")])
        if result[0] == "missing":
            raise NotFoundError(f"no destination {name!r}")
        endpoint, left = result[1], int(result[2])
        circuit_deleted = False
        if endpoint and left == 0 and not any(endpoint_id(d.url) == endpoint
                                              for d in self.file.values()):
            circuit_deleted = bool(self.client.delete(
                keys.circuit(endpoint), keys.circuit_waiting(endpoint),
                keys.circuit_probe(endpoint)))
        woken = 0
        for batch in _chunks(iter(slots), PAGE):
            woken += int(self._wake(keys=[keys.schedule], args=[keys.hold_prefix, *batch]))
        return Removal(name=name, pending_events=pending, woken_keys=woken,
                       circuit_deleted=circuit_deleted, windows_removed=self._remove_windows(name))

    def _remove_windows(self, name: str) -> list[str]:
        """Delete the run-time maintenance windows of a removed destination (a destination
        added again under its name starts without them); their ids."""
        from worker.maintenance import remove_window, runtime_windows

        ids = [w.id for w in runtime_windows(self.client, self.keys) if w.destination == name]
        for window_id in ids:
            remove_window(self.client, self.keys, window_id)
        return ids

    def reencrypt(self) -> Reencryption:
        """Reseal every stored routing key under the first key of the ring (through the
        same change script, so workers reload them), so an older key can be dropped.
        Destinations that cannot be opened are reported, not changed."""
        ring = self._ring()
        report = Reencryption(ring.primary_id)
        for names in _chunks(self.names(), PAGE):
            for name in names:
                report.total += 1
                outcome = self._reseal(name, ring)
                if outcome == "resealed":
                    report.resealed += 1
                elif outcome == "already":
                    report.already += 1
                elif outcome != "gone":
                    report.failed[name] = outcome
        return report

    # --- helpers --------------------------------------------------------------------------

    def _reseal(self, name: str, ring: KeyRing) -> str:
        for _ in range(CHANGE_ATTEMPTS):
            stored = self.client.hmget(self.keys.destination(name), "routing_key", "version",
                                       "api_token")
            sealed, version, token = stored
            if sealed is None:
                return "gone"
            if stored_key_id(sealed) == ring.primary_id and (
                    not token or stored_key_id(token) == ring.primary_id):
                return "already"
            context = API_TOKEN_CONTEXT.format(name=name)
            try:
                fields = {"routing_key": ring.seal(ring.open(sealed, name), name),
                          "key_id": ring.primary_id}
                if token:
                    fields["api_token"] = ring.seal(ring.open(token, context), context)
            except UndecryptableError as exc:
                return str(exc)
            result = self._put(keys=self._put_keys(name),
                               args=[name, "update", version, json.dumps(fields),
                                     self.keys.account_destinations(""),
                                     self.keys.registry_channel,
                                 self.keys.service_destinations("")])
            if result[0] == "ok":
                return "resealed"
            if result[0] == "missing":
                return "gone"
        return "kept changing while being re-encrypted; run reencrypt again"

    def _written(self, destination: Destination, fields: Mapping[str, str],
                 result: list[Any]) -> DestinationRecord:
        """The record of what PUT just wrote, without reading it back."""
        sealed = SealedKey(fields.get("routing_key", ""),
                           int(fields.get("routing_key_length") or 0),
                           fields.get("routing_key_fingerprint", ""), self.key_ring)
        written = Destination.from_registry(
            destination.model_dump(exclude_none=True), sealed,
            sealed_api_token=_sealed_api_token(fields, self.key_ring))
        return DestinationRecord.of(written, {"version": str(result[1]),
                                              "created_at": str(result[3]),
                                              "updated_at": str(result[4])})

    def _put_keys(self, name: str) -> list[str]:
        keys = self.keys
        return [keys.destination(name), keys.destination_names, keys.registry_key_ids,
                keys.registry_endpoints, keys.registry_version, keys.destination_removed(name),
                keys.rest_destinations, keys.rest_version]

    def _ring(self) -> KeyRing:
        if self.key_ring is None:
            raise ConfigurationError([NO_KEY_RING])
        return self.key_ring

    def _seal(self, name: str, routing_key: str) -> SealedKey:
        ring = self._ring()
        return SealedKey(ring.seal(routing_key, name), len(routing_key),
                         fingerprint(routing_key), ring)

    def _seal_api_token(self, name: str, api_token: str | None) -> SealedKey | None:
        if api_token is None:
            return None
        ring = self._ring()
        return SealedKey(ring.seal(api_token, API_TOKEN_CONTEXT.format(name=name)),
                         len(api_token), fingerprint(api_token), ring)

    @staticmethod
    def _name_problems(name: str) -> list[str]:
        if isinstance(name, str) and NAME_PATTERN.match(name):
            return []
        return [f"name: must be 1-64 letters, digits, '_' or '-' (got {name!r})"]

    def _validate(self, name: str, settings: dict[str, Any], routing_key: str | None,
                  api_token: str | None = None, *,
                  has_token: bool = False) -> tuple[Destination | None, list[str]]:
        """The destination `settings` describe, and every problem with them (`has_token`:
        whether it will have a REST API token, given now or kept)."""
        problems = []
        if routing_key is not None:
            problem = routing_key_problem(routing_key)
            if problem:
                problems.append(f"routing_key: {problem}")
        if api_token is not None:
            problem = api_token_problem(api_token)
            if problem:
                problems.append(f"pagerduty_api_token: {problem}")
        if has_token != bool(settings.get("pagerduty_service_id")):
            problems.append("pagerduty_service_id: REST credentials are a service id and an "
                            "API token together: give both (or clear the service id)")
        unknown = sorted(set(settings) - set(SETTINGS))
        problems.extend(f"{key}: unknown setting" for key in unknown)
        try:
            destination = Destination.model_validate(
                {"name": name, **{k: v for k, v in settings.items() if k in SETTINGS}})
        except ValidationError as exc:
            return None, [*problems, *(p for p in validation_problems(exc)
                                       if not p.startswith("name:"))]
        return (destination if not problems else None), problems

    @staticmethod
    def _fields(destination: Destination, sealed: SealedKey | None,
                sealed_api_token: SealedKey | None = None, *,
                drop_api_token: bool = False) -> dict[str, str]:
        """The hash fields of a validated destination ('' deletes an unset one)."""
        fields = {
            "region": destination.region,
            "events_url": destination.events_url or "",
            "source": destination.source,
            "client": destination.client,
            "client_url": destination.client_url or "",
            "rate_limit_per_minute": str(destination.rate_limit_per_minute),
            "severity_map": json.dumps(destination.severity_map, sort_keys=True),
            "coalesce": "1" if destination.coalesce else "0",
            "account": destination.account or "",
            "pagerduty_service_id": destination.pagerduty_service_id or "",
            "pagerduty_from": destination.pagerduty_from or "",
            "pagerduty_api_url": destination.pagerduty_api_url or "",
            "endpoint_id": endpoint_id(destination.url),
        }
        if drop_api_token:
            fields.update(dict.fromkeys(API_TOKEN_FIELDS, ""))
        if sealed_api_token is not None:
            fields.update(api_token=sealed_api_token.stored,
                          api_token_length=str(sealed_api_token.length),
                          api_token_fingerprint=sealed_api_token.fingerprint)
        if sealed is not None:
            fields.update(routing_key=sealed.stored, key_id=sealed.key_id or "",
                          routing_key_length=str(sealed.length),
                          routing_key_fingerprint=sealed.fingerprint)
        return fields

    def parse(self, name: str, stored: Mapping[str, str], *,
              validate: bool = True) -> Destination | None:
        """The destination a stored hash (or the `LOADED` fields of it) describes; None for
        an empty one; InvalidDestinationError for one that no longer validates."""
        if not stored:
            return None
        try:
            sealed = SealedKey(stored.get("routing_key", ""),
                               int(stored.get("routing_key_length") or 0),
                               stored.get("routing_key_fingerprint", ""), self.key_ring)
            settings = _settings(stored)
            if not validate and not isinstance(settings.get("severity_map", {}), dict):
                raise ValueError("severity_map is not a JSON object")
            return Destination.from_registry(
                {"name": name, **settings}, sealed, validate=validate,
                sealed_api_token=_sealed_api_token(stored, self.key_ring))
        except (ValidationError, ValueError) as exc:
            problems = (validation_problems(exc, f"destination {name}: ")
                        if isinstance(exc, ValidationError) else [f"destination {name}: {exc}"])
            raise InvalidDestinationError(problems) from None


def _sealed_api_token(stored: Mapping[str, str], ring: KeyRing | None) -> SealedKey | None:
    """The sealed REST API token of a stored hash (or of fields being written), if any."""
    if not stored.get("api_token"):
        return None
    return SealedKey(stored["api_token"], int(stored.get("api_token_length") or 0),
                     stored.get("api_token_fingerprint", ""), ring)


def _loaded(values: list[str | None]) -> dict[str, str]:
    """The `LOADED` fields HMGET found (empty when the destination does not exist)."""
    return {k: v for k, v in zip(LOADED, values, strict=True) if v is not None}


def _settings(stored: Mapping[str, str]) -> dict[str, Any]:
    """The settings of a destination's hash, typed as the model takes them."""
    settings: dict[str, Any] = {k: stored[k] for k in SETTINGS if stored.get(k)}
    if "severity_map" in settings:
        settings["severity_map"] = json.loads(settings["severity_map"])
    if "coalesce" in settings:
        settings["coalesce"] = settings["coalesce"] == "1"
    return settings


def _read_only(name: str, verb: str) -> str:
    return (f"destination {name!r} is defined in the destinations file (MONITAO_PD_CONFIG): "
            f"the commands cannot {verb} it; edit the file and restart the fleet")


def _time(millis: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(millis) / 1000, UTC) if millis else None


def _chunks(items: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
