"""Redis connections for the fleet's own state, and the broker options Celery is given.

Three kinds of URL work for both the state Redis and the broker:

- `redis://` — plain TCP;
- `rediss://` — TLS, the server certificate always verified (against
  `MONITAO_PD_REDIS_TLS_CA_FILE`, or the system's CAs), with an optional client certificate;
- `sentinel://h1:26379;sentinel://h2:26379/0` — Redis Sentinel (Celery's form), with the
  master name in `MONITAO_PD_REDIS_SENTINEL_MASTER`; TLS to Sentinels and master with
  `MONITAO_PD_REDIS_SENTINEL_TLS=true`.

Celery shows what it was given: a worker's `inspect stats` reply (and so Flower's worker
pages) carries the broker connection's options and URLs. The Sentinel password is therefore
given as a `HiddenPassword`, which shows as `********` wherever it is printed or serialised,
and `redacted_broker_info` hides every password left in what a worker reports.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import redis
from pydantic import SecretStr
from redis.credentials import CredentialProvider
from redis.sentinel import Sentinel

from config.errors import ConfigurationError, RedisUnavailableError
from config.settings import (
    SentinelURL,
    Settings,
    is_sentinel_url,
    parse_sentinel_url,
    redact_url,
)

# Keeps commands from hanging forever on a dead server while allowing slow scripts.
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


def redis_client(
    settings: Settings | str,
    *,
    check: bool = True,
    url: str | None = None,
    timeout: float | None = None,
) -> redis.Redis:
    """A client for the fleet's state Redis; with `check`, ping it or raise a clear error.

    Given `Settings`, it opens `url` (by default the state Redis; pass the broker URL to read
    the broker) with the settings' TLS files and Sentinel master. Given a plain URL string,
    only `redis://` and `rediss://` (system CAs) work. `timeout` caps connect and command
    time (for a health check); by default commands may take `SOCKET_TIMEOUT`.

    Values are decoded as UTF-8 with surrogate escapes, so bytes that are not UTF-8 (a
    malformed entry written by something else) survive a round trip instead of raising.
    """
    config = settings if isinstance(settings, Settings) else None
    url = url or (config.redis_url if config else str(settings))
    options: dict[str, Any] = dict(
        decode_responses=True,
        encoding_errors="surrogateescape",
        socket_timeout=timeout or SOCKET_TIMEOUT,
        socket_connect_timeout=min(timeout or CONNECT_TIMEOUT, CONNECT_TIMEOUT),
        health_check_interval=30,
        retry_on_timeout=True,
    )
    if is_sentinel_url(url):
        if config is None or not config.redis_sentinel_master:
            raise ConfigurationError([
                f"{redact_urls(url)}: a sentinel:// URL needs MONITAO_PD_REDIS_SENTINEL_MASTER"
            ])
        client = _sentinel_client(url, config, options)
    else:
        if url.startswith("rediss://"):
            options.update(redis_tls_options(config))
        try:
            client = redis.Redis.from_url(url, **options)
        except ValueError as exc:
            raise ConfigurationError([
                f"{_variable_of(url, config)}: invalid Redis URL {redact_urls(url)!r}: {exc}"
            ]) from None
    if check:
        ping(client, url, variable=_variable_of(url, config))
    return client


def _variable_of(url: str, settings: Settings | None) -> str:
    if settings is not None and url == settings.broker_url and url != settings.redis_url:
        return "MONITAO_PD_BROKER_URL"
    return "MONITAO_PD_REDIS_URL"


def refuse_misconfigured_redis(settings: Settings, *, timeout: float = CONNECT_TIMEOUT) -> None:
    """Connect once to the state Redis and the broker; raise `ConfigurationError` if either
    refuses the connection (a database the server does not have).

    A Redis that does not answer passes: long-running processes wait for it. This is for
    them, at start-up, so a wrong URL stops them at once instead of retrying for ever.
    """
    for url in dict.fromkeys((settings.redis_url, settings.celery_broker_url)):
        try:
            redis_client(settings, url=url, timeout=timeout).close()
        except RedisUnavailableError:
            continue


def redis_tls_options(settings: Settings | None) -> dict[str, Any]:
    """redis-py keyword arguments for a verified TLS connection (`ssl_*`)."""
    options: dict[str, Any] = {"ssl_cert_reqs": "required"}
    if settings is not None:
        for option, path in (("ssl_ca_certs", settings.redis_tls_ca_file),
                             ("ssl_certfile", settings.redis_tls_cert_file),
                             ("ssl_keyfile", settings.redis_tls_key_file)):
            if path is not None:
                options[option] = str(path)
    return options


def _sentinel_client(url: str, settings: Settings, options: dict[str, Any]) -> redis.Redis:
    try:
        target = parse_sentinel_url(url)
    except ValueError as exc:
        raise ConfigurationError([f"{redact_urls(url)}: {exc}"]) from None
    tls = redis_tls_options(settings) if settings.redis_sentinel_tls else {}
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        **({"ssl": True, **tls} if tls else {}),
    }
    if settings.redis_sentinel_password is not None:
        sentinel_kwargs["password"] = settings.redis_sentinel_password.get_secret_value()
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    master: dict[str, Any] = {**options, "db": target.db}
    if tls:
        master.update(ssl=True, **tls)
    if target.username:
        master["username"] = target.username
    if target.password is not None:
        master["password"] = target.password
    assert settings.redis_sentinel_master  # checked by the caller and by Settings
    return sentinel.master_for(settings.redis_sentinel_master, redis_class=redis.Redis, **master)


def celery_broker_options(settings: Settings) -> dict[str, Any]:
    """The Celery settings that connect to the broker: URL, TLS and Sentinel options.

    `broker_transport_options` holds only the Sentinel keys here; the caller merges them
    with its own. For `rediss://`, the certificate is always verified (kombu alone would
    connect without verifying). For Sentinel, the URL is rewritten so that the master's
    credentials and database sit on the first element, the only one kombu reads them from.
    """
    url = settings.celery_broker_url
    result: dict[str, Any] = {"broker_url": url, "broker_transport_options": {}}
    celery_tls = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        **{k: v for k, v in redis_tls_options(settings).items() if k != "ssl_cert_reqs"},
    }
    if is_sentinel_url(url):
        target = parse_sentinel_url(url)
        result["broker_url"] = sentinel_broker_url(target)
        transport: dict[str, Any] = {"master_name": settings.redis_sentinel_master}
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT,
        }
        if settings.redis_sentinel_tls:
            result["broker_use_ssl"] = celery_tls
            sentinel_kwargs.update(ssl=True, **celery_tls)
        if settings.redis_sentinel_password is not None:
            # Not a `password` string: Celery shows transport options in `inspect stats`.
            sentinel_kwargs["credential_provider"] = HiddenPassword(
                settings.redis_sentinel_password)
        transport["sentinel_kwargs"] = sentinel_kwargs
        result["broker_transport_options"] = transport
    elif url.startswith("rediss://"):
        result["broker_use_ssl"] = celery_tls
    return result


HIDDEN = "********"


class HiddenPassword(CredentialProvider):
    """A password for redis-py (`credential_provider=`) that never shows: its repr and its
    JSON (kombu's encoder of control replies) are `********`."""

    def __init__(self, password: SecretStr) -> None:
        self._password = password

    def get_credentials(self) -> tuple[str]:
        return (self._password.get_secret_value(),)

    async def get_credentials_async(self) -> tuple[str]:
        return self.get_credentials()

    def __repr__(self) -> str:
        return f"HiddenPassword({HIDDEN})"

    def __json__(self) -> str:
        return HIDDEN

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HiddenPassword) and other._password == self._password

    def __hash__(self) -> int:
        return hash(self._password)


# Option names whose value is a secret, in what a worker reports about its broker connection.
SECRET_OPTION = re.compile(r"pass|secret|token|credential|auth", re.IGNORECASE)


def redacted_broker_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """kombu's connection info (the `broker` of `celery inspect stats`, which Flower shows)
    with its passwords hidden: the connection's own (dropped, as Celery does), any option
    named like a secret at any depth (`sentinel_kwargs.password`, a credential provider),
    and the password of every URL (`alternates` holds the Sentinel URL as configured)."""
    return {name: _redacted(name, value) for name, value in info.items() if name != "password"}


def _redacted(name: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _redacted(str(key), item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(name, item) for item in value]
    if value not in (None, "") and SECRET_OPTION.search(name):
        return HIDDEN
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def sentinel_broker_url(target: SentinelURL) -> str:
    """Celery's Sentinel URL, with credentials and database on the first element."""
    auth = ""
    if target.username or target.password is not None:
        auth = quote(target.username or "", safe="")
        if target.password is not None:
            auth += ":" + quote(target.password, safe="")
        auth += "@"
    elements = []
    for index, (host, port) in enumerate(target.sentinels):
        shown = f"[{host}]" if ":" in host else host
        if index == 0:
            elements.append(f"sentinel://{auth}{shown}:{port}/{target.db}")
        else:
            elements.append(f"sentinel://{shown}:{port}")
    return ";".join(elements)


def redact_urls(url: str) -> str:
    """`redact_url`, which hides the passwords of each element of a `;`-joined URL too."""
    return redact_url(url)


def ping(client: redis.Redis, url: str, *, variable: str = "MONITAO_PD_REDIS_URL") -> None:
    """Raise `RedisUnavailableError` naming the URL (password hidden) if Redis is silent.

    A server that answers but refuses the connection's set-up (a database index beyond its
    `databases`), or that is not Redis at all, is a `ConfigurationError` naming `variable`:
    retrying cannot help.
    """
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisUnavailableError(
            f"cannot reach Redis at {redact_urls(url)} ({exc.__class__.__name__}: {exc})"
        ) from None
    except (redis.ResponseError, redis.exceptions.InvalidResponse) as exc:
        raise refused_configuration(variable, url, exc) from None


def refused_configuration(variable: str, url: str, exc: Exception) -> ConfigurationError:
    """The configuration error for a Redis at `url` that refused to set up a connection."""
    if "DB index is out of range" in str(exc):
        return ConfigurationError([
            f"{variable}: Redis at {redact_urls(url)} has no such database (DB index is out "
            "of range: the server's `databases` setting, 16 by default, bounds it)"
        ])
    if isinstance(exc, redis.exceptions.InvalidResponse):
        return ConfigurationError([
            f"{variable}: what answers at {redact_urls(url)} is not Redis ({exc})"])
    return ConfigurationError([
        f"{variable}: Redis at {redact_urls(url)} refused the connection "
        f"({exc.__class__.__name__}: {exc})"
    ])
