"""Text from outside made safe to show and to keep: control characters escaped, keys masked.

Values that come from outside the fleet (PagerDuty's answers and webhooks, stored events,
Celery replies) reach terminals and log files. `printable` escapes the characters that a
terminal or a log reader would act on, so a value can neither move the cursor, clear the
screen nor start a line of its own. `mask_routing_keys` replaces a destination's routing
key, and anything shaped like one, before such a text is stored or shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# C0 and C1 controls and DEL (category Cc); line and paragraph separators, which some log
# readers break lines on; the bidirectional controls, which reorder what is shown (U+061C,
# U+200E/F, U+202A-E, U+2066-9); and lone surrogates (undecodable bytes kept by
# surrogateescape), which a terminal's encoder would refuse.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# What a masked key is shown as: fixed, so not even its length shows.
MASK = "********"

# A PagerDuty routing key is 32 letters and digits; a run of exactly that many, not part of
# a longer run, may be one.
KEY_SHAPED = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{32}(?![A-Za-z0-9])")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object) -> str:
    """`value` as text with control characters escaped the way Python writes them (`\\n`,
    `\\x1b`, `\\u202e`; a byte kept by surrogateescape as `\\xff`); everything else,
    backslashes included, left as it is.

    Escaping twice gives the same text as escaping once.
    """
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def has_controls(text: str) -> bool:
    """Whether `printable(text)` would change `text`."""
    return _UNSAFE.search(text) is not None


def mask_routing_keys(text: str, keys: Iterable[str] = (), *, key_shaped: bool = True) -> str:
    """`text` with each of `keys` (in any letter case, anywhere) and, unless `key_shaped` is
    false, every key-shaped token replaced by `MASK`."""
    for key in keys:
        if key:
            text = re.sub(re.escape(key), MASK, text, flags=re.IGNORECASE)
    return KEY_SHAPED.sub(MASK, text) if key_shaped else text


def duration(millis: float | None) -> str:
    """A duration for people: `850 ms`, `4.2 s`, `3 min 5 s`, `2 h 10 min`."""
    if millis is None:
        return "-"
    if millis < 1000:
        return f"{millis:.0f} ms"
    seconds = millis / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"
