"""Configuration: settings, destinations, the Redis keyspace and connections."""

from config.destinations import Destination, load_destinations
from config.errors import (
    AmbiguousIdError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    InvalidDestinationError,
    InvalidEventError,
    InvalidInputError,
    MonitaoPDError,
    NotFoundError,
    PermissionDeniedError,
    RedisUnavailableError,
    RemoteError,
    UndecryptableError,
    UnknownDestinationError,
)
from config.keyspace import Keyspace
from config.settings import Settings, load_settings

__all__ = [
    "AmbiguousIdError",
    "AuthenticationError",
    "ConfigurationError",
    "ConflictError",
    "Destination",
    "InvalidDestinationError",
    "InvalidEventError",
    "InvalidInputError",
    "Keyspace",
    "MonitaoPDError",
    "NotFoundError",
    "PermissionDeniedError",
    "RedisUnavailableError",
    "RemoteError",
    "Settings",
    "UndecryptableError",
    "UnknownDestinationError",
    "load_destinations",
    "load_settings",
]
