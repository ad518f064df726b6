"""The project's exceptions, one root, split by what the caller does next.

    MonitaoPDError
     ├── ConfigurationError        fix the settings or destinations file, then restart
     ├── InvalidInputError         fix the request (an argument, a filter, a cursor)
     │    ├── InvalidEventError         fix the event; nothing was enqueued
     │    │    └── UnknownDestinationError   name a configured destination
     │    ├── AmbiguousIdError          give more characters of the id
     │    └── InvalidDestinationError   fix the destination's fields; nothing was stored
     ├── RedisUnavailableError     Redis did not answer; retry later or fix the URL
     ├── NotFoundError             an id or name given by the caller does not exist
     ├── ConflictError             the thing exists but its state refuses the request;
     │                             nothing changed
     ├── UndecryptableError        a stored secret does not open with this key ring
     ├── RemoteError               PagerDuty's REST API refused or did not answer
     └── AuthenticationError       no API token, or one that is unknown or revoked
          └── PermissionDeniedError     a valid token without the scope the request needs
"""

from __future__ import annotations


class MonitaoPDError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigurationError(MonitaoPDError):
    """The settings or the destinations file are invalid; `problems` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class InvalidInputError(MonitaoPDError, ValueError):
    """A request was refused as given; `problems` name each field (or option) and reason."""

    summary = "invalid input"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{self.summary}: " + "; ".join(self.problems))


class InvalidEventError(InvalidInputError):
    """An alert event was refused at `send()`; `problems` name each field and reason."""

    summary = "invalid event"


class AmbiguousIdError(InvalidInputError):
    """An id prefix matches more than one event; the message names some of them."""

    summary = "ambiguous id"


class UnknownDestinationError(InvalidEventError):
    """The event names a destination that the configuration does not define."""


class RedisUnavailableError(MonitaoPDError):
    """Redis could not be reached; the message names the URL without its password."""


class NotFoundError(MonitaoPDError):
    """An event, incident or destination named by the caller does not exist."""


class InvalidDestinationError(InvalidInputError):
    """A run-time destination was refused; `problems` name each field and its value (never a
    secret's), one line each, and nothing was stored."""

    summary = "invalid destination"


class ConflictError(MonitaoPDError):
    """What the caller named exists, but its state refuses the request and nothing was
    changed. `code` says how: `exists` (the name is taken), `read_only` (a destination of the
    file), `pending_events` (removing would dead-letter `pending` events: confirm),
    `changed` (changed meanwhile), `conflict` (any other: a dead letter whose replay is on
    its way cannot be purged, ...)."""

    def __init__(self, message: str, *, code: str = "conflict", pending: int = 0) -> None:
        self.code, self.pending = code, pending
        super().__init__(message)


class UndecryptableError(MonitaoPDError):
    """A secret stored in Redis does not open with this process's key ring
    (`MONITAO_PD_SECRET_KEYS`): its key is missing from the ring, or the value was altered.
    The message names the destination and key id, never any part of the secret."""


class AuthenticationError(MonitaoPDError):
    """No API token was given, or it is unknown or revoked."""


class PermissionDeniedError(AuthenticationError):
    """A valid API token that lacks the scope the request needs."""


class RemoteError(MonitaoPDError):
    """PagerDuty's REST API refused a call or did not answer; the message says why in one
    line (never a token). `retryable`: the same call may succeed later."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)
