"""Configuration: settings, destinations, the Redis keyspace and connections."""

from config.destinations import Destination, load_destinations
from config.errors import (
    ConfigurationError,
    ConflictError,
    InvalidDestinationError,
    InvalidEventError,
    MonitaoPDError,
    NotFoundError,
    RedisUnavailableError,
    UndecryptableError,
    UnknownDestinationError,
)
from config.keyspace import Keyspace
from config.settings import Settings, load_settings

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "Destination",
    "InvalidDestinationError",
    "InvalidEventError",
    "Keyspace",
    "MonitaoPDError",
    "NotFoundError",
    "RedisUnavailableError",
    "Settings",
    "UndecryptableError",
    "UnknownDestinationError",
    "load_destinations",
    "load_settings",
]
