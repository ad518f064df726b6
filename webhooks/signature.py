"""PagerDuty's webhook signature: `X-PagerDuty-Signature: v1=<hex HMAC-SHA256>[,v1=...]`.

PagerDuty signs the raw body with the subscription's secret; while a secret is rotated the
header carries one `v1=` signature per secret. A body is authentic when any `v1` signature
in the header matches the HMAC of the body under any configured secret. Comparisons are
constant-time (`hmac.compare_digest`); every pair is compared, so the time taken does not
tell which secret or which signature came close.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

SIGNATURE_HEADER = "X-PagerDuty-Signature"
VERSION = "v1"
# A header with more signatures than this is not PagerDuty's (it sends one per live secret).
MAX_SIGNATURES = 16


def sign(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of `body` under `secret`."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_header(secrets: Iterable[str], body: bytes) -> str:
    """The header value PagerDuty would send for `body` signed with each of `secrets`."""
    return ",".join(f"{VERSION}={sign(secret, body)}" for secret in secrets)


def signatures(header: str | None) -> list[str]:
    """The `v1` signatures of a header value (other versions and garbage are skipped)."""
    found = []
    for part in (header or "").split(",")[:MAX_SIGNATURES]:
        version, sep, value = part.strip().partition("=")
        if sep and version == VERSION and value:
            found.append(value.strip().lower())
    return found


def verify(header: str | None, body: bytes, secrets: Iterable[str]) -> bool:
    """Whether any `v1` signature in `header` is the HMAC of `body` under any secret."""
    given = [value.encode("ascii", "replace") for value in signatures(header)]
    if not given:
        return False
    matched = False
    for secret in secrets:
        expected = sign(secret, body).encode()
        for value in given:
            matched |= hmac.compare_digest(expected, value)
    return matched
