"""One lookup of destinations by name, for workers, producers and commands: the file's, then
the registry's (config/registry.py), read from Redis only on a miss.

A worker keeps the run-time destinations it delivers to in a bounded LRU cache and never
reads the whole registry. In `watch` mode (workers) a daemon thread subscribes to the
registry channel: a message drops that name at once; a reconnect drops everything (pub/sub
loses what is published meanwhile); and a poll of the registry's version counter about once
a second drops everything when a change was published but never heard. Without `watch`
(producers, commands) an entry is trusted for `ttl_seconds` only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping

import redis

from config import defaults
from config.destinations import Destination, load_destinations
from config.errors import ConfigurationError, InvalidDestinationError
from config.keyspace import Keyspace
from config.registry import Registry
from config.secrets import KeyRing
from config.settings import Settings

log = logging.getLogger(__name__)

# Label of the per-destination metric series of destinations without an account, once there
# are more destinations than `metrics_max` (see `metrics_label`).
OTHER_LABEL = "other"
# After the version poll sees a change not yet announced on the channel, the message gets
# this long to arrive before everything is dropped.
ANNOUNCE_GRACE_SECONDS = 0.25
RECONNECT_MAX_SECONDS = 5.0
# How often the watcher looks whether it was asked to stop.
STOP_CHECK_SECONDS = 0.25


# Every lookup of this process: a forked child gets fresh locks (a thread of the parent may
# have held one at the fork, and it would never be released in the child).
_LOOKUPS: weakref.WeakSet[DestinationLookup] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lookup in list(_LOOKUPS):
        lookup._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class DestinationLookup:
    """Destinations by name: the file's (`file`) first, then the registry's, cached."""

    def __init__(
        self, client: redis.Redis, keys: Keyspace, *,
        file_destinations: Mapping[str, Destination] | None = None,
        key_ring: KeyRing | None = None,
        cache_size: int = defaults.DESTINATION_CACHE_SIZE,
        watch: bool = False,
        poll_seconds: float = defaults.REGISTRY_POLL_SECONDS,
        ttl_seconds: float = defaults.REGISTRY_READ_TTL_SECONDS,
        metrics_max: int = defaults.METRICS_MAX_DESTINATIONS,
        validate: bool = True,
        reader: Callable[[], redis.Redis] | None = None,
    ) -> None:
        self.client, self.keys = client, keys
        self.file: dict[str, Destination] = dict(file_destinations or {})
        self.registry = Registry(client, keys, key_ring=key_ring, file_destinations=self.file)
        self.cache_size, self.watch, self.validate = cache_size, watch, validate
        # the client a miss is read with (a worker thread's own connection), else `client`
        self._reader = reader
        self.poll_seconds, self.ttl_seconds, self.metrics_max = (poll_seconds, ttl_seconds,
                                                                 metrics_max)
        self._cache: OrderedDict[str, tuple[Destination, float]] = OrderedDict()
        self._lock = threading.Lock()
        # bumped by every invalidation: a load that began before one is not cached
        self._epoch = 0
        self._count: tuple[int, float] | None = None
        self._watcher: threading.Thread | None = None
        self._watcher_pid: int | None = None
        self._stop = threading.Event()
        self._pubsub: redis.client.PubSub | None = None
        # set while the watcher is subscribed (tests wait for it)
        self.subscribed = threading.Event()
        _LOOKUPS.add(self)

    # --- lookups --------------------------------------------------------------------------

    def get(self, name: str, default: Destination | None = None) -> Destination | None:
        """The destination `name` (the file's, else the registry's), or `default`."""
        found = self.file.get(name)
        if found is not None:
            return found
        self.start()
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(name)
            if entry is not None and (self.watch or now - entry[1] < self.ttl_seconds):
                self._cache.move_to_end(name)
                return entry[0]
            epoch = self._epoch
        try:
            loaded = self.registry.load(name, validate=self.validate,
                                        client=self._reader() if self._reader else None)
        except InvalidDestinationError as exc:
            log.warning("run-time destination %r cannot be used: %s", name, exc)
            return default
        if loaded is None:
            return default
        with self._lock:
            if self._epoch == epoch:
                self._cache[name] = (loaded, now)
                self._cache.move_to_end(name)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return loaded

    def preload(self, names: Iterable[str]) -> None:
        """Read the run-time destinations among `names` that are not cached, in one round
        trip (a batch of events to many destinations costs one read, not one per name)."""
        now = time.monotonic()
        with self._lock:
            missing = sorted({name for name in names if name not in self.file and not (
                name in self._cache
                and (self.watch or now - self._cache[name][1] < self.ttl_seconds))})
            epoch = self._epoch
        if not missing:
            return
        self.start()
        loaded = self.registry.load_many(missing, validate=self.validate)
        with self._lock:
            if self._epoch != epoch:
                return
            for name, destination in loaded.items():
                if destination is not None:
                    self._cache[name] = (destination, now)
                    self._cache.move_to_end(name)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def __getitem__(self, name: str) -> Destination:
        found = self.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def removed(self, name: str) -> bool:
        """Whether a run-time destination of this name was removed (not a hot path: asked
        only for an event whose destination is unknown)."""
        return self.registry.removed(name)

    def total(self) -> int:
        """How many destinations there are (file and registry); the registry's count is read
        at most every poll interval."""
        now = time.monotonic()
        held = self._count
        if held is None or now - held[1] >= self.poll_seconds:
            held = (self.registry.count(), now)
            self._count = held
        return len(self.file) + held[0]

    def only(self) -> str | None:
        """The name of the only destination, when there is exactly one."""
        if self.total() != 1:
            return None
        if self.file:
            return next(iter(self.file))
        return next(self.registry.names(), None)

    def describe_names(self, limit: int = 10) -> str:
        """The known names for an error message: the file's, and how many run-time ones."""
        names = sorted(self.file)
        shown = ", ".join(names[:limit]) + (f", ... ({len(names)} in the file)"
                                            if len(names) > limit else "")
        count = self.total() - len(self.file)
        if count:
            shown = (shown + "; " if shown else "") + f"{count} in the registry"
        return shown or "none"

    def metrics_label(self, name: str) -> str:
        """The `destination` label of `name`'s metric series: its name while the fleet has at
        most `metrics_max` destinations, else `account:ACCOUNT`, or `other` without one."""
        if name.startswith("@") or self.total() <= self.metrics_max:
            return name
        destination = self.get(name)
        account = destination.account if destination is not None else None
        return f"account:{account}" if account else OTHER_LABEL

    def cached(self) -> int:
        """How many run-time destinations this process holds now."""
        return len(self._cache)

    def file_items(self) -> Iterator[tuple[str, Destination]]:
        """The file's destinations."""
        return iter(self.file.items())

    # --- invalidation ---------------------------------------------------------------------

    def invalidate(self, name: str | None = None) -> None:
        """Forget `name` (None: every run-time destination)."""
        with self._lock:
            self._epoch += 1
            if name is None:
                self._cache.clear()
            else:
                self._cache.pop(name, None)

    def close(self) -> None:
        """Stop watching the registry (the thread ends within a poll interval)."""
        self._stop.set()
        watcher = self._watcher
        if watcher is not None and watcher.is_alive() and self._watcher_pid == os.getpid():
            watcher.join(STOP_CHECK_SECONDS + 2)

    def start(self) -> None:
        """Start watching the registry in this process, if watching and not yet started
        (lookups start it too: a forked child starts its own)."""
        if not self.watch or self._watcher_pid == os.getpid() or self._stop.is_set():
            return
        with self._lock:
            if self._watcher_pid == os.getpid():
                return
            # a forked child inherits the parent's entries but not its thread
            self._epoch += 1
            self._cache.clear()
            self.subscribed.clear()
            self._watcher_pid = os.getpid()
            self._watcher = threading.Thread(target=self._watch, name="monitao-registry",
                                             daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=False)
            self._pubsub = pubsub
            try:
                self._follow(pubsub)
                delay = 0.1
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self.subscribed.clear()
                self.invalidate()
                log.warning("registry notifications lost (%s); cached destinations dropped, "
                            "reconnecting", exc.__class__.__name__)
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
            except Exception:  # the thread must outlive anything: the cache drops instead
                self.subscribed.clear()
                self.invalidate()
                log.exception("registry watcher failed; cached destinations dropped")
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
            finally:
                with contextlib.suppress(Exception):  # closing a broken connection
                    pubsub.close()

    def _follow(self, pubsub: redis.client.PubSub) -> None:
        """Subscribe, then drop names as they are announced and everything on a gap."""
        pubsub.subscribe(self.keys.registry_channel)
        deadline = time.monotonic() + 10
        while True:
            message = pubsub.get_message(timeout=1.0)
            if message and message["type"] == "subscribe":
                break
            if time.monotonic() > deadline:
                raise redis.TimeoutError("no subscription confirmation")
        # what was read before the subscription may have changed unheard
        self.invalidate()
        heard = self._poll()
        self.subscribed.set()
        target: int | None = None  # a version the poll saw and the channel has not announced
        recheck_at = next_poll = time.monotonic() + self.poll_seconds
        while not self._stop.is_set():
            wake = min(next_poll, time.monotonic() + STOP_CHECK_SECONDS)
            if target is not None:
                wake = min(wake, recheck_at)
            timeout = max(0.0, wake - time.monotonic())
            message = pubsub.get_message(timeout=timeout)
            if message and message["type"] == "subscribe":
                # redis-py reconnected and subscribed again by itself: whatever was published
                # in between is lost, so everything cached may be stale
                log.info("registry notifications resumed after a reconnect; cached "
                         "destinations dropped")
                self.invalidate()
            if message and message["type"] == "message":
                data = message["data"]
                text = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
                version, _, name = text.partition(" ")
                self.invalidate(name)
                heard = max(heard, int(version) if version.isdigit() else heard)
            now = time.monotonic()
            if target is not None and now >= recheck_at:
                if heard < target:
                    log.warning("registry change %d was not announced; cached destinations "
                                "dropped", target)
                    self.invalidate()
                    heard = target
                target, recheck_at = None, next_poll
            if now >= next_poll:
                current = self._poll()
                if current > heard:
                    target = current
                    recheck_at = now + min(ANNOUNCE_GRACE_SECONDS, self.poll_seconds / 2)
                next_poll = now + self.poll_seconds

    def _poll(self) -> int:
        """The registry's version (and, on the way, its size)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.registry_version)
        pipe.zcard(self.keys.destination_names)
        version, count = pipe.execute()
        self._count = (int(count), time.monotonic())
        return int(version or 0)


def fleet_lookup(settings: Settings, client: redis.Redis) -> DestinationLookup:
    """The destinations of the fleet `settings` describe, for a process that calls
    PagerDuty's REST API (`webhooks subscribe`, the webhook processor's incident lookups):
    the file's (their secrets resolved where this environment can: a file that names a
    variable this process lacks is read without its secrets) and the registry's, with this
    process's key ring to open the registry's API tokens."""
    file: dict[str, Destination] = {}
    if settings.config is not None:
        try:
            file = load_destinations(settings.config)
        except ConfigurationError:
            try:
                file = load_destinations(settings.config, resolve_secrets=False)
            except ConfigurationError as exc:
                log.warning("destinations file not read (%s); only run-time destinations "
                            "are used", "; ".join(exc.problems)[:300])
    return DestinationLookup(client, Keyspace(settings.key_prefix), file_destinations=file,
                             key_ring=settings.key_ring(),
                             cache_size=settings.destination_cache_size)
