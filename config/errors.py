"""The project's exceptions, one root, split by what the caller does next.

    MonitaoPDError
     ├── ConfigurationError        fix the settings or destinations file, then restart
     ├── InvalidEventError         fix the event; nothing was enqueued
     ├── UnknownDestinationError   name a configured destination (also an InvalidEventError)
     ├── RedisUnavailableError     Redis did not answer; retry later or fix the URL
     ├── NotFoundError             an id given on the command line does not exist
     ├── InvalidDestinationError   fix the destination's fields; nothing was stored
     ├── ConflictError             the change clashes with what exists; nothing changed
     └── UndecryptableError        a stored secret does not open with this key ring
"""

from __future__ import annotations


class MonitaoPDError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigurationError(MonitaoPDError):
    """The settings or the destinations file are invalid; `problems` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class InvalidEventError(MonitaoPDError, ValueError):
    """An alert event was refused at `send()`; `problems` name each field and reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid event: " + "; ".join(problems))


class UnknownDestinationError(InvalidEventError):
    """The event names a destination that the configuration does not define."""


class RedisUnavailableError(MonitaoPDError):
    """Redis could not be reached; the message names the URL without its password."""


class NotFoundError(MonitaoPDError):
    """An event, incident or destination named by the caller does not exist."""


class InvalidDestinationError(MonitaoPDError, ValueError):
    """A run-time destination was refused; `problems` name each field and its value (never a
    secret's), one line each, and nothing was stored."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid destination: " + "; ".join(problems))


class ConflictError(MonitaoPDError):
    """The change clashes with the current state and nothing was changed. `code` says how:
    `exists` (the name is taken), `read_only` (a destination of the file), `pending_events`
    (removing would dead-letter `pending` events: confirm), `changed` (changed meanwhile)."""

    def __init__(self, code: str, message: str, *, pending: int = 0) -> None:
        self.code, self.pending = code, pending
        super().__init__(message)


class UndecryptableError(MonitaoPDError):
    """A secret stored in Redis does not open with this process's key ring
    (`MONITAO_PD_SECRET_KEYS`): its key is missing from the ring, or the value was altered.
    The message names the destination and key id, never any part of the secret."""
