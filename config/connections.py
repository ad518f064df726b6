"""Redis connections for the fleet's own state (Celery manages its broker connections)."""

from __future__ import annotations

import redis

from config.errors import RedisUnavailableError
from config.settings import Settings, redact_url

# Keeps commands from hanging forever on a dead server while allowing slow scripts.
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


def redis_client(settings: Settings | str, *, check: bool = True) -> redis.Redis:
    """A client for the fleet's state Redis; with `check`, ping it or raise a clear error.

    Values are decoded as UTF-8 with surrogate escapes, so bytes that are not UTF-8 (a
    malformed entry written by something else) survive a round trip instead of raising.
    """
    url = settings if isinstance(settings, str) else settings.redis_url
    try:
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            encoding_errors="surrogateescape",
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            health_check_interval=30,
            retry_on_timeout=True,
        )
    except ValueError as exc:
        raise RedisUnavailableError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from None
    if check:
        ping(client, url)
    return client


def ping(client: redis.Redis, url: str) -> None:
    """Raise `RedisUnavailableError` naming the URL (password hidden) if Redis is silent."""
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisUnavailableError(
            f"cannot reach Redis at {redact_url(url)} ({exc.__class__.__name__}: {exc})"
        ) from None
