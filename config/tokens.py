"""API tokens: made once, stored only as a SHA-256 hash, each with a name and scopes.

A token is 32 random bytes (URL-safe base64) behind a recognisable `mpd_` prefix, printed
once by `monitao-pd tokens create`. Redis keeps `{prefix}token:{sha256}` (name, scopes,
created_at) and a name index for listing and revoking. Checking a token is a lookup by its
hash, so no comparison of secrets happens at all (constant time by construction), and a
copy of Redis gives nobody a usable token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from config.errors import ConflictError, InvalidInputError, NotFoundError
from config.idempotent import IdempotentScript
from config.keyspace import Keyspace

# What each scope lets a token do (the HTTP API's endpoints name the one they need).
SCOPES = {
    "events:write": "enqueue alert events (POST /v1/events, /v1/events/batch)",
    "destinations:read": "list and show destinations (GET /v1/destinations[/NAME])",
    "destinations:write": "add, change and remove destinations (POST /v1/destinations, "
                          "PATCH and DELETE /v1/destinations/NAME) and send tests "
                          "(POST /v1/destinations/NAME/test)",
    "incidents:read": "read incident timelines",
    "dead-letters:read": "list and show dead letters",
    "dead-letters:write": "replay and purge dead letters",
    "maintenance:write": "add and remove maintenance windows",
    "status:read": "read the fleet's status and maintenance windows",
}
TOKEN_PREFIX = "mpd_"
TOKEN_BYTES = 32
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# KEYS: 1 name index, 2 the token's record   ARGV: name, digest, scopes, created_at
# Refuses a name in use (0); else stores the record and its index entry (1).
CREATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[2], 'name', ARGV[1], 'scopes', ARGV[3], 'created_at', ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
# KEYS: 1 name index   ARGV: name, the token key prefix
# Deletes the named token's record and index entry; returns 1, or 0 when no such name.
REVOKE = """
local digest = redis.call('HGET', KEYS[1], ARGV[1])
if not digest then return 0 end
redis.call('DEL', ARGV[2] .. digest)
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Token:
    """A stored token's record: never the token itself."""

    name: str
    scopes: tuple[str, ...]
    created_at: str

    def allows(self, scope: str) -> bool:
        """Whether the token carries `scope`."""
        return scope in self.scopes

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: name, scopes, created_at."""
        return {"name": self.name, "scopes": list(self.scopes), "created_at": self.created_at}


def digest(token: str) -> str:
    """The SHA-256 hex of a token, as stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def validate(name: str, scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, deduplicated in order; `InvalidInputError` naming each bad value."""
    problems = []
    if not NAME.match(name):
        problems.append(f"name: {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit")
    chosen = tuple(dict.fromkeys(scopes))
    if not chosen:
        problems.append(f"scope: at least one is required (one of {', '.join(SCOPES)})")
    problems += [f"scope: unknown scope {scope!r} (one of {', '.join(SCOPES)})"
                 for scope in chosen if scope not in SCOPES]
    if problems:
        raise InvalidInputError(problems)
    return chosen


def create(client: redis.Redis, keys: Keyspace, name: str,
           scopes: Iterable[str]) -> tuple[str, Token]:
    """Make a token; return it (to be shown once) and its record. Raises
    `InvalidInputError` for a bad name or scope, `ConflictError` for a name in use."""
    chosen = validate(name, scopes)
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    record = Token(name, chosen, datetime.now(UTC).isoformat(timespec="seconds"))
    stored = IdempotentScript(client, CREATE, keys)(
        keys=[keys.api_token_names, keys.api_token(digest(token))],
        args=[name, digest(token), " ".join(chosen), record.created_at])
    if not stored:
        raise ConflictError(f"a token named {name!r} exists; revoke it first or choose "
                            "another name")
    return token, record


def find(client: redis.Redis, keys: Keyspace, token: str) -> Token | None:
    """The record of a token, or None when it is unknown or revoked."""
    return find_by_digest(client, keys, digest(token))


def find_by_digest(client: redis.Redis, keys: Keyspace, token_digest: str) -> Token | None:
    """The record of the token whose SHA-256 hex is `token_digest`, or None."""
    fields = client.hgetall(keys.api_token(token_digest))
    return _record(fields) if fields else None


def all_tokens(client: redis.Redis, keys: Keyspace) -> list[Token]:
    """Every token's record, by name."""
    index = client.hgetall(keys.api_token_names)
    pipe = client.pipeline(transaction=False)
    names = sorted(index)
    for name in names:
        pipe.hgetall(keys.api_token(index[name]))
    return [_record(fields) for fields in pipe.execute() if fields]


def revoke(client: redis.Redis, keys: Keyspace, name: str) -> None:
    """Delete the named token (every API replica refuses it within its cache time);
    `NotFoundError` when no token has that name."""
    if not IdempotentScript(client, REVOKE, keys)(keys=[keys.api_token_names],
                                                  args=[name, keys.api_token("")]):
        raise NotFoundError(f"no token named {name!r}")


def _record(fields: dict[str, str]) -> Token:
    return Token(fields.get("name", ""), tuple(fields.get("scopes", "").split()),
                 fields.get("created_at", ""))
