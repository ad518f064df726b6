"""Opaque cursors for reading long lists in pages (dead letters, timelines).

A cursor is the position of the last item a page returned, encoded so that callers treat
it as a token: URL-safe base64 of its parts. It holds no state on the server, so any API
replica can continue any client's walk.
"""

from __future__ import annotations

import base64
import binascii

from config.errors import InvalidInputError

SEPARATOR = "\n"


def encode_cursor(kind: str, *parts: str) -> str:
    """A cursor into a list of `kind` holding `parts` (text without newlines)."""
    raw = SEPARATOR.join((kind, *parts)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, parts: int) -> list[str]:
    """The parts of a cursor that `encode_cursor(kind, ...)` made; `InvalidInputError` for
    anything else (including a cursor into another kind of list)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):
        raise bad_cursor() from None
    found = raw.split(SEPARATOR)
    if len(found) != parts + 1 or found[0] != kind or not all(found):
        raise bad_cursor()
    return found[1:]


def bad_cursor() -> InvalidInputError:
    """The error for a cursor this service did not give."""
    return InvalidInputError(["cursor: not a cursor from a previous page (start without one)"])
