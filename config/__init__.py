"""Configuration: settings, destinations, the Redis keyspace and connections."""

from config.destinations import Destination, load_destinations
from config.errors import (
    ConfigurationError,
    InvalidEventError,
    MonitaoPDError,
    NotFoundError,
    RedisUnavailableError,
    UnknownDestinationError,
)
from config.keyspace import Keyspace
from config.settings import Settings, load_settings

__all__ = [
    "ConfigurationError",
    "Destination",
    "InvalidEventError",
    "Keyspace",
    "MonitaoPDError",
    "NotFoundError",
    "RedisUnavailableError",
    "Settings",
    "UnknownDestinationError",
    "load_destinations",
    "load_settings",
]
