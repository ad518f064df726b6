"""Console sessions: signing in with an API token gives an opaque session kept in Redis.

The cookie holds only a random session id (32 bytes); Redis keeps, under the id's SHA-256
(`keys.console_session`), the digest of the API token it signed in with (never the token),
the token's name, the session's CSRF token and a one-shot notice for the next page. It
expires `defaults.CONSOLE_SESSION_SECONDS` after signing in. Every request looks the token
up again by its digest, so a session has exactly the token's scopes now, and revoking the
token (`monitao-pd tokens revoke`) ends its sessions at once. Nothing lives in the API
process: any replica serves any session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import redis

from config import defaults
from config import tokens as api_tokens
from config.errors import AuthenticationError
from config.keyspace import Keyspace

SESSION_BYTES = 32


@dataclass(frozen=True)
class Session:
    """A signed-in session: its token's record (scopes as they are now) and CSRF token."""

    key: str  # the Redis key (from the id's digest), never the id itself
    token: api_tokens.Token
    csrf: str

    def allows(self, scope: str) -> bool:
        """Whether the session's token carries `scope`."""
        return self.token.allows(scope)

    def csrf_matches(self, given: str | None) -> bool:
        """Whether `given` is this session's CSRF token (a constant-time comparison)."""
        return bool(given) and hmac.compare_digest(given.encode(), self.csrf.encode())


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


class SessionStore:
    """Console sessions of one fleet (its Redis and keyspace)."""

    def __init__(self, client: redis.Redis, keys: Keyspace,
                 ttl_seconds: float = defaults.CONSOLE_SESSION_SECONDS) -> None:
        self.client, self.keys, self.ttl_seconds = client, keys, ttl_seconds

    def sign_in(self, token: str) -> str:
        """A new session for an API token; returns the session id (the cookie's value).
        Raises `AuthenticationError` for an unknown or revoked token."""
        record = api_tokens.find(self.client, self.keys, token.strip())
        if record is None:
            raise AuthenticationError("unknown or revoked API token")
        session_id = secrets.token_urlsafe(SESSION_BYTES)
        key = self.keys.console_session(_digest(session_id))
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping={"token": api_tokens.digest(token.strip()),
                                "csrf": secrets.token_urlsafe(SESSION_BYTES)})
        pipe.expire(key, int(self.ttl_seconds))
        pipe.execute()
        return session_id

    def find(self, session_id: str | None) -> Session | None:
        """The live session of this id, with its token's record now; None when there is
        none, it expired, or its token was revoked."""
        if not session_id or len(session_id) > 256:
            return None
        key = self.keys.console_session(_digest(session_id))
        stored = self.client.hmget(key, "token", "csrf")
        if not stored[0] or not stored[1]:
            return None
        record = api_tokens.find_by_digest(self.client, self.keys, stored[0])
        if record is None:
            return None
        return Session(key, record, stored[1])

    def sign_out(self, session: Session) -> None:
        """End the session: its id no longer signs anything in."""
        self.client.delete(session.key)

    def notify(self, session: Session, notice: str) -> None:
        """Keep a one-line notice for the session's next page (after a redirect)."""
        self.client.hset(session.key, "notice", notice[:500])

    def take_notice(self, session: Session) -> str | None:
        """The notice kept for this page, removed as it is read."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hget(session.key, "notice")
        pipe.hdel(session.key, "notice")
        notice, _ = pipe.execute()
        return notice or None
