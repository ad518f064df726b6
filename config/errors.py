"""The project's exceptions, one root, split by what the caller does next.

    MonitaoPDError
     ├── ConfigurationError        fix the settings or destinations file, then restart
     ├── InvalidEventError         fix the event; nothing was enqueued
     ├── UnknownDestinationError   name a configured destination (also an InvalidEventError)
     ├── RedisUnavailableError     Redis did not answer; retry later or fix the URL
     └── NotFoundError             an id given on the command line does not exist
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
