"""What one API process holds: settings, the file's destinations, Redis, the producer.

Connections and caches only; every fact lives in Redis, so replicas are interchangeable.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Annotated

import redis
from fastapi import Depends, Request

from api.auth import TokenCache
from api.metrics import ApiMetrics
from config.connections import redis_client
from config.destinations import Destination, load_destinations
from config.keyspace import Keyspace
from config.lookup import DestinationLookup
from config.registry import Registry, registry_for
from config.settings import Settings
from producer.producer import AlertProducer


class Services:
    """The shared functions' inputs, built once per process."""

    def __init__(self, settings: Settings,
                 destinations: Mapping[str, Destination] | None = None) -> None:
        self.settings = settings
        # Routing keys are not needed: the API never sends, and never shows one.
        self.file_destinations = dict(
            destinations if destinations is not None else
            load_destinations(settings.config, resolve_secrets=False) if settings.config
            else {})
        self.keys = Keyspace(settings.key_prefix)
        self.metrics = ApiMetrics()

    @cached_property
    def redis(self) -> redis.Redis:
        """The state Redis (a thread-safe pool)."""
        return redis_client(self.settings, check=False)

    @cached_property
    def tokens(self) -> TokenCache:
        """API tokens, cached briefly."""
        return TokenCache(self.redis, self.keys)

    @cached_property
    def producer(self) -> AlertProducer:
        """Enqueues events exactly as `send()` does."""
        return AlertProducer(self.settings, destinations=self.file_destinations,
                             redis=self.redis)

    @cached_property
    def registry(self) -> Registry:
        """The run-time destinations (the file's read-only beside them), sealing routing
        keys with this process's key ring; it never opens one."""
        return registry_for(self.settings, self.redis, self.file_destinations)

    @property
    def destinations(self) -> DestinationLookup:
        """The file's destinations and the registry's (the producer's lookup)."""
        return self.producer.destinations

    def close(self) -> None:
        """Release connections."""
        if "producer" in self.__dict__:
            self.producer.celery.close()
        if "redis" in self.__dict__:
            self.redis.close()


def get_services(request: Request) -> Services:
    """The app's `Services`."""
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]
