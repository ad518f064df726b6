"""Secrets at rest: the key ring that encrypts the routing keys of run-time destinations.

The ring comes from `MONITAO_PD_SECRET_KEYS`: comma-separated, base64-encoded 32-byte keys.
The first key encrypts; every key decrypts, so a key is rotated by putting a new one first,
re-encrypting (`monitao-pd destinations reencrypt`), then dropping the old one.

A secret is sealed with AES-256-GCM under a random 96-bit nonce, with the destination's
name as associated data (a ciphertext copied onto another destination does not open), and
stored as

    v1:<key id>:<nonce>:<ciphertext>      (nonce and ciphertext URL-safe base64)

where the key id is a short hash of the key, so the ring knows which of its keys to use.
Opening fails closed: any doubt raises `UndecryptableError`, never returns the stored text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from config.errors import UndecryptableError

KEY_BYTES = 32
NONCE_BYTES = 12
SCHEME = "v1"
KEY_RING_VARIABLE = "MONITAO_PD_SECRET_KEYS"
# Separates the key id's hash input from any other use of SHA-256 over the key.
_KEY_ID_CONTEXT = b"monitao-pd key id\x00"


def key_id(key: bytes) -> str:
    """The short, stable name of a key: 8 hex digits of a hash (reveals nothing of it)."""
    return hashlib.sha256(_KEY_ID_CONTEXT + key).hexdigest()[:8]


def fingerprint(secret: str) -> str:
    """The first 8 hex digits of a secret's SHA-256: support can tell two keys apart."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


def generate_key() -> str:
    """A new random key, base64-encoded, ready for `MONITAO_PD_SECRET_KEYS`."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def stored_key_id(stored: str) -> str | None:
    """The key id a stored secret names, or None when it is not in the sealed form."""
    parts = stored.split(":")
    if len(parts) != 4 or parts[0] != SCHEME:
        return None
    return parts[1]


def parse_key_ring(text: str) -> KeyRing:
    """The ring from `MONITAO_PD_SECRET_KEYS`'s text; `ValueError` naming each bad key by
    its position, never by its value."""
    entries = [part.strip() for part in text.split(",")]
    if not any(entries):
        raise ValueError("no key given (comma-separated base64 keys of 32 bytes; "
                         "make one with `monitao-pd secrets generate-key`)")
    problems, keys = [], []
    for position, entry in enumerate(entries, start=1):
        if not entry:
            problems.append(f"key {position} is empty")
            continue
        try:
            key = base64.b64decode(entry, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"key {position} is not valid base64")
            continue
        if len(key) != KEY_BYTES:
            problems.append(f"key {position} is {len(key)} bytes once decoded, not {KEY_BYTES}")
            continue
        if key in keys:
            problems.append(f"key {position} repeats key {keys.index(key) + 1}")
            continue
        keys.append(key)
    if problems:
        raise ValueError("; ".join(problems) + " (values not shown)")
    return KeyRing(keys)


class KeyRing:
    """Keys that seal and open secrets: the first seals, any opens (see the module doc)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        if any(len(key) != KEY_BYTES for key in keys):
            raise ValueError(f"every key must be {KEY_BYTES} bytes")
        self._ciphers = {key_id(key): AESGCM(bytes(key)) for key in keys}
        self.ids: tuple[str, ...] = tuple(key_id(key) for key in keys)

    @property
    def primary_id(self) -> str:
        """The id of the key that seals."""
        return self.ids[0]

    def __repr__(self) -> str:
        return f"KeyRing(ids={list(self.ids)})"

    def seal(self, secret: str, context: str) -> str:
        """`secret` encrypted under the first key, bound to `context` (a destination's name)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.primary_id].encrypt(nonce, secret.encode(),
                                                        context.encode())
        return ":".join((SCHEME, self.primary_id, _b64(nonce), _b64(sealed)))

    def holds(self, stored: str) -> bool:
        """Whether the key a stored secret names is in this ring (no decryption tried)."""
        return stored_key_id(stored) in self._ciphers

    def open(self, stored: str, context: str) -> str:
        """The secret sealed in `stored` for `context`; raises `UndecryptableError` (never
        returning `stored` or any part of it) when the form, the key or the tag is wrong."""
        parts = stored.split(":")
        if len(parts) != 4 or parts[0] != SCHEME:
            raise UndecryptableError(f"{context}: the stored secret is not in the "
                                     f"{SCHEME}:<key id>:<nonce>:<ciphertext> form")
        cipher = self._ciphers.get(parts[1])
        if cipher is None:
            raise UndecryptableError(
                f"{context}: sealed under key id {_printable(parts[1])}, which is not in "
                f"{KEY_RING_VARIABLE} (this ring has {', '.join(self.ids)})")
        try:
            nonce, sealed = _unb64(parts[2]), _unb64(parts[3])
            if len(nonce) != NONCE_BYTES:
                raise ValueError("nonce length")
            return cipher.decrypt(nonce, sealed, context.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise UndecryptableError(
                f"{context}: the stored secret does not open under key id {parts[1]} "
                "(altered, or copied from another destination)") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _printable(text: str) -> str:
    # a key id read from Redis: short hex when well formed, shown escaped otherwise
    return text if text.isalnum() and len(text) <= 16 else repr(text[:16])
