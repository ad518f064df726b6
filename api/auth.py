"""Bearer tokens and scopes: who may call what.

`Authorization: Bearer TOKEN`; the token is looked up by its SHA-256 (config/tokens.py).
A replica keeps what it found for at most `defaults.API_TOKEN_CACHE_SECONDS` (under the
2 s in which a revocation must reach every replica); unknown tokens are never cached, so
a new token works at once. No token or an unknown one: 401; a token without the scope
the endpoint names: 403. The token is never logged or echoed.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

import redis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from config import defaults
from config import tokens as api_tokens
from config.errors import AuthenticationError, PermissionDeniedError
from config.keyspace import Keyspace

# Declares the scheme in the OpenAPI document; a missing header is ours to refuse.
bearer = HTTPBearer(auto_error=False, description="a token from `monitao-pd tokens create`")
# Far more tokens than any deployment has; bounds what a flood of valid tokens can hold.
MAX_CACHED = 10_000


class TokenCache:
    """Token records by hash, each kept for `ttl` seconds (thread-safe)."""

    def __init__(self, client: redis.Redis, keys: Keyspace,
                 ttl: float = defaults.API_TOKEN_CACHE_SECONDS) -> None:
        self._client, self._keys, self._ttl = client, keys, ttl
        self._entries: dict[str, tuple[float, api_tokens.Token]] = {}
        self._lock = threading.Lock()

    def lookup(self, token: str) -> api_tokens.Token | None:
        """The token's record, or None when it is unknown or revoked."""
        digest = api_tokens.digest(token)
        now = time.monotonic()
        with self._lock:
            cached = self._entries.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = api_tokens.find_by_digest(self._client, self._keys, digest)
        with self._lock:
            if record is None:
                self._entries.pop(digest, None)
            else:
                if len(self._entries) >= MAX_CACHED:
                    self._entries.clear()
                self._entries[digest] = (now + self._ttl, record)
        return record


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require(scope: str) -> Any:
    """A dependency admitting a caller whose token carries `scope`; it yields the token's
    record (for `operator` names on what the caller changes)."""
    if scope not in api_tokens.SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def caller(request: Request, credentials: Credentials) -> api_tokens.Token:
        if credentials is None or not credentials.credentials:
            raise AuthenticationError("send Authorization: Bearer TOKEN "
                                      "(a token from `monitao-pd tokens create`)")
        cache: TokenCache = request.app.state.services.tokens
        record = cache.lookup(credentials.credentials)
        if record is None:
            raise AuthenticationError("unknown or revoked token")
        if not record.allows(scope):
            raise PermissionDeniedError(f"token {record.name!r} lacks the scope {scope!r}")
        return record

    caller.__name__ = f"require_{scope.replace(':', '_').replace('-', '_')}"
    return Depends(caller)


def operator(record: api_tokens.Token) -> str:
    """How a change made through the API names who made it (timeline `operator`)."""
    return f"api:{record.name}"

