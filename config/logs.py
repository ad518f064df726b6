"""Log records of the fleet's processes: every value escaped, so no value forges a line.

One mechanism for every record, whichever handler or formatter writes it (Celery's, the
webhook receiver's, a CLI command's, a test's): `escape_log_records()` installs a log
record factory that escapes control characters (`config.text.printable`) in the message's
arguments and in the exception text of a record, before any handler sees it. A newline in
PagerDuty's error text or in a webhook field is then written as `\\n` inside its own line.
A traceback keeps its own lines; only the exceptions' messages in it are escaped.

`configure_logging(level)` gives a service without a logging set-up of its own (the webhook
receiver) a handler on standard error, with the time and level of each line.
"""

from __future__ import annotations

import logging
import numbers
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from config.errors import ConfigurationError
from config.text import has_controls, printable

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(name)s] %(message)s"
# What Python writes between two chained exceptions.
CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"

_lock = threading.Lock()
_installed: list[Callable[..., logging.LogRecord]] = []


class _Escaped:
    """An argument whose text is escaped whichever way the message formats it."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return printable(str(self.value))

    def __repr__(self) -> str:
        return printable(repr(self.value))


def _escaped_arg(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if value is None or isinstance(value, numbers.Number | bytes):
        return value  # `%d` and `%.1f` need the number; bytes print as their repr
    return _Escaped(value)


def escape_record(record: logging.LogRecord) -> logging.LogRecord:
    """Escape control characters in `record`'s message, arguments and exception text."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string: the handler reports it
        return record
    if has_controls(message):
        if isinstance(record.args, Mapping):
            record.args = {key: _escaped_arg(value) for key, value in record.args.items()}
        elif record.args:
            record.args = tuple(_escaped_arg(value) for value in record.args)
        record.msg = printable(record.msg if isinstance(record.msg, str) else str(record.msg))
        try:
            still_unsafe = has_controls(record.getMessage())
        except Exception:  # noqa: BLE001 - an argument that fails once escaped
            still_unsafe = True
        if still_unsafe:  # an argument that formats itself: keep the whole message instead
            record.msg, record.args = printable(message), ()
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        record.exc_text = escaped_traceback(record.exc_info)
    return record


def escaped_traceback(
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None]
    | tuple[None, None, None],
) -> str:
    """The traceback as `logging` writes it, each exception's message escaped."""
    exc = exc_info[1]
    if exc is None:
        return ""
    chain: list[tuple[BaseException, str | None]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, CONTEXT
        else:
            current = None
    parts: list[str] = []
    for error, link_text in reversed(chain):
        te = traceback.TracebackException(type(error), error, error.__traceback__,
                                          compact=True)
        if te.stack:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(te.stack.format())
        parts.extend(printable(chunk.removesuffix("\n")) + "\n"
                     for chunk in te.format_exception_only())
        if link_text:
            parts.append(link_text)
    return "".join(parts).removesuffix("\n")


def escape_log_records() -> None:
    """Escape every log record this process creates from now on (idempotent)."""
    with _lock:
        current = logging.getLogRecordFactory()
        if current in _installed:
            return

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return escape_record(current(*args, **kwargs))

        _installed.append(factory)
        logging.setLogRecordFactory(factory)


def configure_logging(level: str | int = "INFO") -> None:
    """Lines on standard error at `level`, escaped, unless the root logger has a handler."""
    escape_log_records()
    name = level.upper() if isinstance(level, str) else level
    if isinstance(name, str) and not isinstance(logging.getLevelName(name), int):
        raise ConfigurationError([f"MONITAO_PD_LOG_LEVEL: unknown level {printable(level)!r} "
                                  "(DEBUG, INFO, WARNING, ERROR or CRITICAL)"])
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(name)
