"""What a worker process holds while it delivers: settings, destinations, Redis, HTTP."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING

import httpx
import redis

from config.connections import redis_client
from config.destinations import Destination, load_destinations
from config.keyspace import Keyspace
from config.lookup import DestinationLookup
from config.settings import Settings, load_settings
from worker.http_transport import ThreadConnectionsTransport
from worker.maintenance import MaintenanceView
from worker.scripts import WorkerScripts
from worker.sender import USER_AGENT

if TYPE_CHECKING:
    from worker.activity import ActivityRecorder
    from worker.follow_ons import FollowOns


class FleetContext:
    """One worker process's view of the fleet, built lazily on first use.

    The HTTP client is per process (prefork children must not share a parent's sockets);
    threads of one process share it and its connection pool.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        destinations: Mapping[str, Destination] | None = None,
    ) -> None:
        self._settings = settings
        self._destinations = dict(destinations) if destinations is not None else None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._http: tuple[int, httpx.Client, ThreadConnectionsTransport] | None = None
        # Set while the worker shuts down: tasks then take no follow-on messages.
        self.stopping = threading.Event()

    @cached_property
    def settings(self) -> Settings:
        """The fleet's settings (from the environment unless given)."""
        return self._settings or load_settings()

    @cached_property
    def destinations(self) -> DestinationLookup:
        """Destinations by name: the file's (given, or `MONITAO_PD_CONFIG`'s, routing keys
        resolved), then the registry's, cached and kept fresh (config/lookup.py); their
        routing keys open with `MONITAO_PD_SECRET_KEYS`, in this process only."""
        settings = self.settings
        file = self._destinations
        if file is None:
            file = load_destinations(settings.config) if settings.config else {}
        return DestinationLookup(
            self.redis, self.keys, file_destinations=file, key_ring=settings.key_ring(),
            cache_size=settings.destination_cache_size, watch=True,
            poll_seconds=settings.registry_poll_seconds,
            metrics_max=settings.metrics_max_destinations,
            reader=lambda: self.thread_client(self.redis))

    @cached_property
    def keys(self) -> Keyspace:
        """The keyspace under the configured prefix."""
        return Keyspace(self.settings.key_prefix)

    @cached_property
    def redis(self) -> redis.Redis:
        """The state Redis client (thread-safe connection pool)."""
        return redis_client(self.settings, check=False)

    @cached_property
    def broker_redis(self) -> redis.Redis:
        """A client of the Celery broker's Redis (`redis` itself when it is the same URL)."""
        url = self.settings.celery_broker_url
        if url == self.settings.redis_url:
            return self.redis
        return redis_client(self.settings, url=url, check=False)

    @cached_property
    def follow_ons(self) -> FollowOns:
        """Takes queued deliver messages off the broker queue (worker/follow_ons.py)."""
        from worker.follow_ons import FollowOns

        return FollowOns(self)

    @cached_property
    def activity(self) -> ActivityRecorder:
        """This process's per-minute delivery figures, flushed to Redis (worker/activity.py)."""
        from worker.activity import ActivityRecorder

        return ActivityRecorder(self.redis, self.keys)

    @property
    def scripts(self) -> WorkerScripts:
        """The Lua scripts, registered on this thread's own connection to `redis`."""
        local = self._local
        if getattr(local, "scripts_pid", None) != os.getpid():
            local.scripts = WorkerScripts(self.thread_client(self.redis), self.keys)
            local.scripts_pid = os.getpid()
        return local.scripts  # type: ignore[no-any-return]

    def thread_client(self, client: redis.Redis) -> redis.Redis:
        """A client over `client`'s pool that holds one connection for this thread.

        Taking a pooled connection per command costs a check of the socket for unread
        data each time (about a tenth of a worker's CPU under load, in py-spy); a worker thread
        runs one command at a time, so it keeps one connection instead.
        """
        clients: dict[int, tuple[int, redis.Redis]] = self._local.__dict__.setdefault(
            "clients", {})
        key = id(client.connection_pool)
        held = clients.get(key)
        if held is None or held[0] != os.getpid():
            held = (os.getpid(), redis.Redis(connection_pool=client.connection_pool,
                                             single_connection_client=True))
            clients[key] = held
        return held[1]

    @cached_property
    def maintenance(self) -> MaintenanceView:
        """Maintenance windows, configured and added at run time."""
        return MaintenanceView(self.redis, self.keys, self.destinations.file.values(),
                               self.settings.maintenance_cache_seconds)

    @cached_property
    def worker_name(self) -> str:
        """Host and process, recorded on every attempt."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def http(self) -> httpx.Client:
        """This process's shared HTTP client, with pooling and explicit timeouts."""
        pid = os.getpid()
        with self._lock:
            if self._http is None or self._http[0] != pid:
                s = self.settings
                # One kept-alive connection per thread (worker/http_transport.py): httpx's
                # own pool costs more CPU per request the more threads share it.
                transport = ThreadConnectionsTransport(
                    connect_timeout=s.http_connect_timeout, read_timeout=s.http_read_timeout)
                client = httpx.Client(
                    timeout=httpx.Timeout(s.http_read_timeout, connect=s.http_connect_timeout),
                    transport=transport,
                    headers={"User-Agent": USER_AGENT},
                    follow_redirects=False,
                )
                self._http = (pid, client, transport)
            return self._http[1]

    def poster(self) -> ThreadConnectionsTransport:
        """What delivery posts with: the transport of `http()`, without httpx's request and
        response objects (worker/http_transport.py)."""
        held = self._http
        if held is None or held[0] != os.getpid():  # first use in this process: build it
            self.http()
            held = self._http
            assert held is not None
        return held[2]

    def close(self) -> None:
        """Close the HTTP client and Redis connections of this process."""
        if "destinations" in self.__dict__:
            self.destinations.close()
        if "activity" in self.__dict__:
            self.activity.close()
        with self._lock:
            if self._http is not None and self._http[0] == os.getpid():
                self._http[1].close()
            self._http = None
        if "broker_redis" in self.__dict__ and self.broker_redis is not self.__dict__.get("redis"):
            self.broker_redis.close()
        if "redis" in self.__dict__:
            self.redis.close()
