"""The fleet's state as Redis holds it, read in one go: for `monitao-pd status`, `GET
/v1/status` and metrics (`fleet_status` is what the first two show).

Everything here is fleet-wide (every worker shares the Redis), so any process reading it
gets the same figures. Reading costs a few pipelined round trips over the scheduled slots
and the dead letters; nothing is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from kombu.exceptions import OperationalError

from config import defaults, rest_checks
from config.connections import redact_urls, redis_client
from config.destinations import Destination, load_destinations
from config.errors import ConfigurationError
from config.keyspace import Keyspace, endpoint_id, split_slot
from config.lookup import DestinationLookup
from config.registry import Registry
from config.rest_checks import RestChecks
from config.settings import Settings
from config.text import duration
from worker import dead_letters
from worker.maintenance_sync_state import sync_summary
from worker.timeline import redis_millis

PAGE = 1000
# How long `fleet_status` waits for workers to answer a ping, unless told.
DEFAULT_PING_TIMEOUT = 1.0


@dataclass
class DestinationState:
    """Admission state of one destination (its routing key) and its Events endpoint."""

    name: str
    pending_events: int = 0
    cooling_down: bool = False
    cooldown_remaining_seconds: float = 0.0
    rate_waiting_keys: int = 0
    rate_window_requests: int = 0
    rate_limit_per_minute: int | None = None
    circuit: str = "unknown"  # closed, open, half_open (a probe may go), unknown (no config)
    circuit_failures: int = 0
    account: str | None = None


@dataclass
class FleetState:
    """One reading of the fleet's Redis state."""

    now_ms: int
    scheduled_keys: int = 0
    due_keys: int = 0
    in_flight: int = 0
    backing_off: int = 0
    pending_events: int = 0
    oldest_pending_ms: int | None = None
    oldest_pending_event: str | None = None
    dead_letters: dict[str, int] = field(default_factory=dict)
    replays_pending: int = 0
    queue_length: int | None = None
    destinations: dict[str, DestinationState] = field(default_factory=dict)
    # run-time destinations (config/registry.py), and those whose events were dead-lettered
    # because a worker's key ring could not open their routing key (name -> events)
    registry_destinations: int = 0
    destinations_known: int = 0  # the file's (as given) and the registry's
    undecryptable: dict[str, int] = field(default_factory=dict)

    @property
    def oldest_pending_age_seconds(self) -> float | None:
        """Age of the oldest event at the head of a pending slot (None when none pends)."""
        if self.oldest_pending_ms is None:
            return None
        return max(0.0, (self.now_ms - self.oldest_pending_ms) / 1000)

    @property
    def dead_letters_total(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def cooling_down(self) -> list[str]:
        """Destinations (routing keys) that wait: after a 429, on their budget, or circuit."""
        return sorted(name for name, d in self.destinations.items()
                      if d.cooling_down or d.rate_waiting_keys or d.circuit == "open")

    def as_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["oldest_pending_age_seconds"] = self.oldest_pending_age_seconds
        result["dead_letters_total"] = self.dead_letters_total
        result["destinations_waiting"] = self.cooling_down
        return result


def read_state(
    client: redis.Redis, keys: Keyspace,
    destinations: Mapping[str, Destination] | Iterable[str] | None = None, *,
    circuit_threshold: int = defaults.CIRCUIT_THRESHOLD,
    rate_window_seconds: float = defaults.RATE_WINDOW_SECONDS,
    broker: redis.Redis | None = None,
) -> FleetState:
    """Read the fleet's state. Destinations named (configured or just names) are always
    reported; destinations with pending events are added. Circuits need the configuration
    (the endpoint comes from a destination's URL)."""
    state = FleetState(now_ms=redis_millis(client))
    configured: dict[str, Destination | None] = {}
    file = getattr(destinations, "file", None)  # a DestinationLookup: its file's
    if isinstance(file, Mapping):
        configured.update(file)
    elif isinstance(destinations, Mapping):
        configured.update(destinations)
    elif destinations is not None:
        configured.update(dict.fromkeys(destinations))
    _read_slots(client, keys, state)
    state.registry_destinations = int(client.zcard(keys.destination_names))
    state.destinations_known = len(configured) + state.registry_destinations
    names = sorted(set(configured) | set(state.destinations))
    for start in range(0, len(names), PAGE):
        _read_destinations(client, keys, state, names[start:start + PAGE], configured,
                           circuit_threshold, rate_window_seconds)
    for letter in dead_letters.iter_dead_letters(client, keys):
        if letter["state"] == "dead_lettered":
            state.dead_letters[letter["reason"]] = state.dead_letters.get(letter["reason"], 0) + 1
            if letter["reason"] == "undecryptable":
                name = letter["destination"]
                state.undecryptable[name] = state.undecryptable.get(name, 0) + 1
        elif letter["state"] == "replay_pending":
            state.replays_pending += 1
    state.dead_letters = dict(sorted(state.dead_letters.items(),
                                     key=lambda item: (-item[1], item[0])))
    if broker is not None:
        state.queue_length = int(broker.llen(keys.queue(defaults.QUEUE_NAME)))
    return state


def _read_slots(client: redis.Redis, keys: Keyspace, state: FleetState) -> None:
    state.scheduled_keys = int(client.zcard(keys.schedule))
    state.due_keys = int(client.zcount(keys.schedule, "-inf", state.now_ms))
    per_destination: Counter[str] = Counter()
    offset = 0
    while True:
        slots = client.zrange(keys.schedule, offset, offset + PAGE - 1)
        if not slots:
            break
        pipe = client.pipeline(transaction=False)
        for slot in slots:
            pipe.llen(keys.mailbox(slot))
            pipe.exists(keys.lease(slot))
            pipe.exists(keys.hold(slot))
            pipe.lindex(keys.mailbox(slot), 0)
        replies = pipe.execute()
        heads = []
        for index, slot in enumerate(slots):
            length, leased, held, head = replies[4 * index: 4 * index + 4]
            per_destination[split_slot(slot)[0]] += int(length)
            state.in_flight += int(leased)
            state.backing_off += int(held)
            if head:
                heads.append(head)
        pipe = client.pipeline(transaction=False)
        for head in heads:
            pipe.hget(keys.event(head), "enqueued_at")
        for head, enqueued_at in zip(heads, pipe.execute(), strict=True):
            if enqueued_at is None:
                continue
            millis = int(float(enqueued_at))
            if state.oldest_pending_ms is None or millis < state.oldest_pending_ms:
                state.oldest_pending_ms, state.oldest_pending_event = millis, head
        offset += PAGE
    state.pending_events = sum(per_destination.values())
    for name, pending in per_destination.items():
        state.destinations[name] = DestinationState(name, pending_events=pending)


def _read_destinations(
    client: redis.Redis, keys: Keyspace, state: FleetState, names: list[str],
    configured: Mapping[str, Destination | None], circuit_threshold: int,
    rate_window_seconds: float,
) -> None:
    """Budget, cooldown and circuit of a page of destinations, in two round trips. A name the
    file does not configure is looked up in the registry (its endpoint and budget)."""
    now = state.now_ms
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hget(keys.cooldown(name), "until")
        pipe.zcard(keys.rate_waiting(name))
        pipe.zcount(keys.rate_window(name), now - int(rate_window_seconds * 1000), "+inf")
        pipe.hmget(keys.destination(name), "endpoint_id", "rate_limit_per_minute", "account")
    replies = pipe.execute()
    circuits: dict[str, str] = {}
    for index, name in enumerate(names):
        cool_until, waiting, window, stored = replies[4 * index: 4 * index + 4]
        entry = state.destinations.setdefault(name, DestinationState(name))
        entry.cooling_down = float(cool_until or 0) > now
        entry.cooldown_remaining_seconds = max(0.0, (float(cool_until or 0) - now) / 1000)
        entry.rate_waiting_keys = int(waiting)
        entry.rate_window_requests = int(window)
        destination = configured.get(name)
        if destination is not None:
            entry.rate_limit_per_minute = destination.rate_limit_per_minute
            entry.account = destination.account
            circuits[name] = endpoint_id(destination.url)
        elif stored[0]:
            entry.rate_limit_per_minute = int(stored[1] or 0) or None
            entry.account = stored[2]
            circuits[name] = stored[0]
    pipe = client.pipeline(transaction=False)
    for endpoint in circuits.values():
        pipe.hmget(keys.circuit(endpoint), "failures", "open_until")
    for name, (failures, open_until) in zip(circuits, pipe.execute(), strict=True):
        entry = state.destinations[name]
        entry.circuit_failures = int(float(failures or 0))
        if entry.circuit_failures < circuit_threshold:
            entry.circuit = "closed"
        else:
            entry.circuit = "open" if now < int(float(open_until or 0)) else "half_open"


def destination_state(
    client: redis.Redis, keys: Keyspace, name: str, destination: Destination | None, *,
    pending_events: int = 0, circuit_threshold: int = defaults.CIRCUIT_THRESHOLD,
    rate_window_seconds: float = defaults.RATE_WINDOW_SECONDS,
) -> DestinationState:
    """One destination's budget, cooldown and circuit now (for `destinations show`)."""
    state = FleetState(now_ms=redis_millis(client))
    state.destinations[name] = DestinationState(name, pending_events=pending_events)
    _read_destinations(client, keys, state, [name], {name: destination}, circuit_threshold,
                       rate_window_seconds)
    return state.destinations[name]


def fleet_status(settings: Settings, *, max_age: float, ping_timeout: float,
                 ping: bool = True, destinations: Mapping[str, Destination] | None = None,
                 client: redis.Redis | None = None) -> dict[str, Any]:
    """Everything `status` shows, as one JSON-ready dict with `healthy` and `verdict`.

    Without `destinations`, the destinations file is read (a process that holds them, as
    the API does, passes them); without `client`, one is opened on the settings' Redis.
    Raises `ConfigurationError` for an invalid destinations file: the workers reading it
    would not start, so the fleet is not "OK".
    """
    client = client or redis_client(settings)
    if destinations is None and settings.config is not None:
        destinations = load_destinations(settings.config, resolve_secrets=False)
    broker: redis.Redis | None = client
    if settings.celery_broker_url != settings.redis_url:
        try:
            broker = redis_client(settings, url=settings.celery_broker_url, timeout=ping_timeout)
        except ConfigurationError:
            raise
        except Exception:  # noqa: BLE001 - the queue length is then unknown, not fatal
            broker = None
    state = read_state(client, Keyspace(settings.key_prefix), destinations,
                       circuit_threshold=settings.circuit_threshold,
                       rate_window_seconds=settings.rate_window_seconds, broker=broker)
    result = state.as_dict()
    registry = Registry(client, Keyspace(settings.key_prefix), key_ring=settings.key_ring(),
                        file_destinations=_with_secrets(settings, destinations))
    result["registry"] = registry.key_usage().as_dict()
    checks = RestChecks(client, Keyspace(settings.key_prefix)).refreshed(
        registry, ca_file=settings.rest_ca_file)
    result["rest_credentials"] = rest_checks.as_dict(checks)
    result["rest_summary"] = rest_checks.summary(checks) if checks else None
    result["maintenance_sync"] = sync_summary(client, Keyspace(settings.key_prefix))
    result["workers"], result["workers_error"] = None, None
    if ping:
        try:
            result["workers"] = ping_workers(settings, timeout=ping_timeout)
        except (OperationalError, OSError) as exc:
            result["workers_error"] = (f"cannot reach the broker at "
                                       f"{redact_urls(settings.celery_broker_url)} "
                                       f"({exc.__class__.__name__})")
    else:
        result["workers_error"] = "not asked"
    age = state.oldest_pending_age_seconds
    result["max_pending_age_seconds"] = max_age
    result["healthy"] = age is None or age <= max_age
    if age is None:
        result["verdict"] = "nothing pending"
    elif result["healthy"]:
        result["verdict"] = (f"oldest pending event is {duration(age * 1000)} old "
                             f"(threshold {duration(max_age * 1000)})")
    else:
        result["verdict"] = (f"oldest pending event is {duration(age * 1000)} old, over the "
                             f"threshold of {duration(max_age * 1000)}")
    return result


def _with_secrets(settings: Settings, destinations: Mapping[str, Destination] | None) -> (
        Mapping[str, Destination]):
    """The file's destinations with their secrets resolved where this process can (the REST
    checks need the API tokens), else as given."""
    given: Mapping[str, Destination] = (
        dict(destinations.file_items()) if isinstance(destinations, DestinationLookup)
        else dict(destinations or {}))
    if settings.config is None:
        return given
    try:
        return _resolved_file(Path(settings.config))
    except (ConfigurationError, OSError):
        return given


# The destinations file with secrets, as last read by this process (a status page refreshed
# every few seconds does not read and parse it each time): path, its stat, destinations.
_RESOLVED: list[tuple[Path, tuple[int, int], Mapping[str, Destination]]] = []


def _resolved_file(path: Path) -> Mapping[str, Destination]:
    """`load_destinations(path)`, read again only when the file changed."""
    stat = path.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    if _RESOLVED and _RESOLVED[0][:2] == (path, version):
        return _RESOLVED[0][2]
    found = load_destinations(path)
    _RESOLVED[:] = [(path, version, found)]
    return found


def ping_workers(settings: Settings, *, timeout: float, hostname: str | None = None) -> list[str]:
    """Node names of the workers that answer a Celery ping within `timeout`, sorted.

    With `hostname`, only workers on that host are asked (a glob on the node name, so other
    hosts' workers stay quiet) and only their replies are kept.
    """
    from celery import Celery

    from worker.app import celery_config

    app = Celery("monitao-pd-health", set_as_current=False)
    app.conf.update(celery_config(settings))
    extra: dict[str, Any] = {}
    if hostname is not None:
        extra = {"pattern": f"*@{hostname}", "matcher": "glob"}
    try:
        with app.connection_for_write(connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
            replies = app.control.ping(timeout=timeout, connection=connection, **extra)
    finally:
        app.close()
    names = sorted(name for reply in replies or [] for name in reply)
    if hostname is not None:
        names = [name for name in names if name.endswith(f"@{hostname}")]
    return names
