"""The fleet's settings: one pydantic-settings object read from `MONITAO_PD_*` variables.

Settings are built by `load_settings()`, never at import time, because the producer is
imported inside MoniTao's own processes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import SplitResult, quote, unquote, urlsplit

from pydantic import (
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config import defaults
from config.errors import ConfigurationError
from config.secrets import KeyRing, parse_key_ring


class Settings(BaseSettings):
    """Everything a producer, worker or CLI command needs besides the destinations."""

    model_config = SettingsConfigDict(env_prefix="MONITAO_PD_", extra="ignore", frozen=True)

    redis_url: str = Field(default_factory=lambda: defaults.REDIS_URL,  # read at each load
                           description="Redis holding the fleet's state")
    broker_url: str | None = Field(None, description="Celery broker; defaults to redis_url")
    key_prefix: str = Field(defaults.KEY_PREFIX, min_length=1, max_length=64)
    config: Path | None = Field(None, description="path of the destinations TOML file")

    retry_base_seconds: float = Field(defaults.RETRY_BASE_SECONDS, gt=0)
    retry_cap_seconds: float = Field(defaults.RETRY_CAP_SECONDS, gt=0)
    max_event_age_seconds: float = Field(defaults.MAX_EVENT_AGE_SECONDS, gt=0)

    http_connect_timeout: float = Field(defaults.HTTP_CONNECT_TIMEOUT, gt=0)
    http_read_timeout: float = Field(defaults.HTTP_READ_TIMEOUT, gt=0)
    uncertain_window_seconds: float = Field(defaults.UNCERTAIN_WINDOW_SECONDS, ge=0)

    visibility_timeout: int = Field(defaults.VISIBILITY_TIMEOUT, ge=10)
    lease_seconds: float = Field(defaults.LEASE_SECONDS, ge=1)
    claim_seconds: float = Field(defaults.CLAIM_SECONDS, ge=1)
    pass_seconds: float = Field(defaults.PASS_SECONDS, gt=0)
    dispatch_interval: float = Field(defaults.DISPATCH_INTERVAL, gt=0)
    dispatch_batch: int = Field(defaults.DISPATCH_BATCH, ge=1)
    max_queue_length: int = Field(defaults.MAX_QUEUE_LENGTH, ge=1)

    cooldown_base_seconds: float = Field(defaults.COOLDOWN_BASE_SECONDS, gt=0)
    cooldown_max_seconds: float = Field(defaults.COOLDOWN_MAX_SECONDS, gt=0)
    rate_window_seconds: float = Field(defaults.RATE_WINDOW_SECONDS, gt=0)
    circuit_threshold: int = Field(defaults.CIRCUIT_THRESHOLD, ge=1)
    circuit_open_seconds: float = Field(defaults.CIRCUIT_OPEN_SECONDS, gt=0)
    circuit_max_open_seconds: float = Field(defaults.CIRCUIT_MAX_OPEN_SECONDS, gt=0)

    maintenance_cache_seconds: float = Field(defaults.MAINTENANCE_CACHE_SECONDS, ge=0)

    # The intake stream (producer/intake.py): how long a dead consumer's lease holds intake
    # up, and how many entries one read takes.
    intake_lease_seconds: float = Field(defaults.INTAKE_LEASE_SECONDS, ge=1)
    intake_batch: int = Field(defaults.INTAKE_BATCH, ge=1, le=10_000)

    # The HTTP API (api/): a request body must arrive within this (a client trickling it
    # holds a connection no longer; 408).
    api_body_read_seconds: float = Field(defaults.API_BODY_READ_SECONDS, gt=0)

    callback_url: str | None = Field(None, pattern=r"^https?://\S+$",
                                     description="MoniTao's endpoint for PagerDuty state changes")
    callback_secret: SecretStr | None = Field(None, description="signs callbacks (HMAC-SHA256)")
    callback_rate_limit_per_minute: int = Field(defaults.CALLBACK_RATE_LIMIT_PER_MINUTE, ge=1)

    timeline_retention_seconds: float = Field(defaults.TIMELINE_RETENTION_SECONDS, gt=0)
    event_retention_seconds: float = Field(defaults.EVENT_RETENTION_SECONDS, gt=0)

    worker_concurrency: int = Field(defaults.WORKER_CONCURRENCY, ge=1)
    worker_pool: str = Field(defaults.WORKER_POOL)
    log_level: str = Field("INFO")

    flower_user: str | None = None
    flower_password: SecretStr | None = None

    # Redis for production: TLS (`rediss://` URLs) and Sentinel (`sentinel://` URLs). They
    # apply to whichever of redis_url and broker_url uses that scheme.
    redis_sentinel_master: str | None = Field(
        None, min_length=1, description="the master name the Sentinels monitor (sentinel:// URLs)")
    redis_sentinel_password: SecretStr | None = Field(
        None, description="the Sentinels' own password; the URL's password is the master's")
    redis_sentinel_tls: bool = Field(
        False, description="TLS to the Sentinels and the master (sentinel:// has no TLS form)")
    redis_tls_ca_file: FilePath | None = Field(
        None, description="CA bundle that signed the Redis server certificate")
    redis_tls_cert_file: FilePath | None = Field(
        None, description="client certificate, when Redis asks for one (tls-auth-clients)")
    redis_tls_key_file: FilePath | None = Field(None, description="the client certificate's key")

    # Operating the fleet: each worker's Prometheus exporter (0 = off) and the status alarm.
    metrics_port: int = Field(defaults.METRICS_PORT, ge=0, le=65535,
                              description="this worker's Prometheus exporter port; 0 = off")
    metrics_address: str = Field(defaults.METRICS_ADDRESS, min_length=1)
    status_max_pending_age_seconds: float = Field(defaults.STATUS_MAX_PENDING_AGE_SECONDS, gt=0)

    # Acknowledgements from PagerDuty (webhooks v3): the subscription secrets (several while
    # one is rotated; comma-separated in MONITAO_PD_WEBHOOK_SECRETS) and how long a delivery
    # id is remembered to drop PagerDuty's repeats.
    webhook_secrets: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="PagerDuty webhook subscription secrets, comma-separated")
    webhook_dedup_seconds: float = Field(defaults.WEBHOOK_DEDUP_SECONDS, gt=0)
    # Incident lookups for webhooks without an incident_key (webhooks/lookups.py): at most
    # this many a minute per API token, and how long a looked-up key is remembered.
    webhook_lookups_per_minute: int = Field(defaults.WEBHOOK_LOOKUPS_PER_MINUTE, ge=1)
    webhook_lookup_cache_seconds: float = Field(defaults.WEBHOOK_LOOKUP_CACHE_SECONDS, gt=0)

    # Run-time destinations (config/registry.py): the key ring that seals their routing keys
    # (comma-separated base64 32-byte keys; the first encrypts, all decrypt), how many each
    # process keeps in memory, and the number of destinations past which metrics aggregate.
    secret_keys: SecretStr | None = Field(
        None, description="key ring for routing keys stored in Redis, comma-separated")
    destination_cache_size: int = Field(defaults.DESTINATION_CACHE_SIZE, ge=1)
    # PagerDuty's REST API (config/pagerduty_rest.py): a CA bundle to trust besides the
    # system's (a TLS-inspecting proxy, or the simulator's throwaway CA), the time a call
    # may take (and its attempts), and how often maintenance windows are reconciled with
    # PagerDuty, and how a failed reconciliation backs off.
    rest_ca_file: FilePath | None = Field(
        None, description="CA bundle (PEM) for PagerDuty's REST API, instead of the system's")
    rest_timeout_seconds: float = Field(defaults.REST_TIMEOUT_SECONDS, gt=0, le=120)
    rest_attempts: int = Field(defaults.REST_ATTEMPTS, ge=1, le=10)
    maintenance_sync_seconds: float = Field(defaults.MAINTENANCE_SYNC_SECONDS, gt=0)
    maintenance_sync_retry_seconds: float = Field(defaults.MAINTENANCE_SYNC_RETRY_SECONDS, gt=0)
    maintenance_sync_retry_cap_seconds: float = Field(
        defaults.MAINTENANCE_SYNC_RETRY_CAP_SECONDS, gt=0)
    registry_poll_seconds: float = Field(defaults.REGISTRY_POLL_SECONDS, gt=0)
    metrics_max_destinations: int = Field(defaults.METRICS_MAX_DESTINATIONS, ge=0)

    @field_validator("webhook_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str | SecretStr):
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            return tuple(part.strip() for part in text.split(",") if part.strip())
        if isinstance(value, list | tuple):
            return tuple(v for v in value
                         if (v.get_secret_value() if isinstance(v, SecretStr) else str(v)).strip())
        return value

    @field_validator("redis_url", "broker_url")
    @classmethod
    def _credentials_in_user_part(cls, value: str | None) -> str | None:
        return credentials_in_user_part(value) if value is not None else None

    @field_validator("secret_keys")
    @classmethod
    def _valid_key_ring(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_key_ring(value.get_secret_value())  # ValueError names the bad key's position
        return value

    def key_ring(self) -> KeyRing | None:
        """The key ring of `MONITAO_PD_SECRET_KEYS`, or None when it is not set."""
        if self.secret_keys is None:
            return None
        return parse_key_ring(self.secret_keys.get_secret_value())

    @field_validator("key_prefix")
    @classmethod
    def _prefix_is_plain(cls, value: str) -> str:
        if any(ch in value for ch in " *?[]\n"):
            raise ValueError("must not contain spaces or glob characters (* ? [ ])")
        return value

    @field_validator("worker_pool")
    @classmethod
    def _known_pool(cls, value: str) -> str:
        if value not in defaults.WORKER_POOLS:
            raise ValueError(f"must be one of {', '.join(defaults.WORKER_POOLS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems = []
        if self.retry_cap_seconds < self.retry_base_seconds:
            problems.append(
                f"retry_cap_seconds ({self.retry_cap_seconds:g}) must be at least "
                f"retry_base_seconds ({self.retry_base_seconds:g})"
            )
        longest_attempt = self.http_connect_timeout + self.http_read_timeout
        if self.lease_seconds < longest_attempt + defaults.ATTEMPT_MARGIN_SECONDS:
            problems.append(
                f"lease_seconds ({self.lease_seconds:g}) must outlast one attempt's deadline, "
                f"http_connect_timeout + http_read_timeout ({longest_attempt:g}), by "
                f"{defaults.ATTEMPT_MARGIN_SECONDS:g} s: no request may leave a worker once "
                "another may hold its key"
            )
        if self.visibility_timeout <= self.pass_seconds + longest_attempt:
            problems.append(
                f"visibility_timeout ({self.visibility_timeout}) must exceed the longest task, "
                f"pass_seconds + one attempt ({self.pass_seconds + longest_attempt:g})"
            )
        if self.callback_url and self.callback_secret is None:
            problems.append("MONITAO_PD_CALLBACK_URL needs MONITAO_PD_CALLBACK_SECRET: "
                            "callbacks are always signed")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _redis_topology(self) -> Settings:
        problems = []
        sentinel = []
        for name, url in (("REDIS_URL", self.redis_url), ("BROKER_URL", self.broker_url)):
            if url and is_sentinel_url(url):
                sentinel.append(f"MONITAO_PD_{name}")
                try:
                    parse_sentinel_url(url)
                except ValueError as exc:
                    problems.append(f"MONITAO_PD_{name}: {exc}")
            elif url and (problem := redis_url_problem(url)):
                problems.append(f"MONITAO_PD_{name}: {problem}")
        if sentinel and not self.redis_sentinel_master:
            problems.append(
                f"MONITAO_PD_REDIS_SENTINEL_MASTER is required when {' and '.join(sentinel)} "
                "is a sentinel:// URL (the master name the Sentinels monitor)"
            )
        if not sentinel:
            for name, value in (("MASTER", self.redis_sentinel_master),
                                ("PASSWORD", self.redis_sentinel_password),
                                ("TLS", self.redis_sentinel_tls)):
                if value:
                    problems.append(f"MONITAO_PD_REDIS_SENTINEL_{name} is set but neither "
                                    "MONITAO_PD_REDIS_URL nor MONITAO_PD_BROKER_URL is sentinel://")
        uses_tls = any(url and url.startswith("rediss://")
                       for url in (self.redis_url, self.broker_url))
        uses_tls = uses_tls or bool(sentinel and self.redis_sentinel_tls)
        tls_files = (self.redis_tls_ca_file, self.redis_tls_cert_file, self.redis_tls_key_file)
        if any(tls_files) and not uses_tls:
            problems.append("MONITAO_PD_REDIS_TLS_* files are set but no Redis URL uses TLS "
                            "(rediss://, or sentinel:// with MONITAO_PD_REDIS_SENTINEL_TLS=true)")
        if bool(self.redis_tls_cert_file) != bool(self.redis_tls_key_file):
            problems.append("MONITAO_PD_REDIS_TLS_CERT_FILE and MONITAO_PD_REDIS_TLS_KEY_FILE "
                            "go together: set both or neither")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def attempt_seconds(self) -> float:
        """One attempt's deadline, from opening its connection to reading the answer."""
        return self.http_connect_timeout + self.http_read_timeout

    @property
    def celery_broker_url(self) -> str:
        """The broker URL Celery connects to."""
        return self.broker_url or self.redis_url


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, with keyword overrides taking precedence.

    Raises `ConfigurationError` with one line per invalid value.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc, env_prefix="MONITAO_PD_")) from None


# Settings whose values are never echoed in an error, whatever is wrong with them.
SECRET_SETTINGS = frozenset({"secret_keys", "flower_password", "callback_secret",
                             "webhook_secrets", "redis_sentinel_password"})


def describe_validation_error(exc: ValidationError, env_prefix: str = "") -> list[str]:
    """One readable line per pydantic error: the field (as its variable), the reason, the value
    (never a secret's)."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"])
        name = f"{env_prefix}{loc.upper()}" if env_prefix and loc else (loc or "settings")
        message = error["msg"].removeprefix("Value error, ")
        if not loc and env_prefix and message.startswith(env_prefix):
            # a cross-field check whose problems already name their variables
            lines.extend(message.split("; "))
            continue
        value = error.get("input")
        secret = bool(error["loc"]) and error["loc"][0] in SECRET_SETTINGS
        if isinstance(value, str) and loc.endswith("url"):
            value = redact_url(value)
        shown = "" if isinstance(value, dict) or value is None or secret else f" (got {value!r})"
        lines.append(f"{name}: {message}{shown}")
    return lines


@dataclass(frozen=True)
class SentinelURL:
    """A `sentinel://` URL taken apart: the Sentinels, the master's database and credentials."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None


SENTINEL_PORT = 26379


def is_sentinel_url(url: str) -> bool:
    """Whether `url` names Redis Sentinels (Celery's `sentinel://h1:26379;sentinel://h2` form)."""
    return url.startswith("sentinel://")


REDIS_SCHEMES = ("redis", "rediss", "unix")


def redis_url_problem(url: str) -> str | None:
    """What makes a `redis://`, `rediss://` or `unix://` URL unusable, or None if nothing.

    Caught here, at start-up, rather than as a traceback from redis-py or kombu at the first
    command: a malformed URL, an invalid port, no host, or a database that is not a number
    (redis-py would quietly use database 0 where kombu refuses).
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what raises
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in REDIS_SCHEMES:
        # not echoed: without a scheme, a password in it would not be recognised and hidden
        got = f"scheme {parts.scheme + '://'!r}" if "://" in url else "no scheme"
        return ("must be redis://host[:port][/db], rediss://..., unix://path or "
                f"sentinel://... ({got})")
    if parts.scheme == "unix":
        return None if parts.path else f"{redact_url(url)!r} names no socket path"
    if not parts.hostname:
        return f"{redact_url(url)!r} names no host (redis://host[:port][/db])"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return f"database {database!r} in {redact_url(url)!r} is not a number"
    return None


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse `sentinel://[[user]:password@]host[:port][/db]` elements joined by `;`.

    The master's credentials and database may be written on any one element, or repeated
    identically on several; a conflict is an error. Raises `ValueError` with the reason.
    """
    hosts: list[tuple[str, int]] = []
    found: dict[str, set[object]] = {"db": set(), "username": set(), "password": set()}
    for part in url.split(";"):
        part = part.strip()
        parts = urlsplit(part)
        if parts.scheme != "sentinel" or not parts.hostname:
            raise ValueError(f"{redact_url(part)!r} is not sentinel://host[:port]")
        try:
            port = parts.port or SENTINEL_PORT
        except ValueError:
            raise ValueError(f"{redact_url(part)!r} has an invalid port") from None
        hosts.append((parts.hostname, port))
        path = parts.path.strip("/")
        if path:
            if not path.isdigit():
                raise ValueError(f"database {path!r} in {redact_url(part)!r} is not a number")
            found["db"].add(int(path))
        if parts.username:
            found["username"].add(unquote(parts.username))
        if parts.password is not None:
            found["password"].add(unquote(parts.password))
    for name, values in found.items():
        if len(values) > 1:
            raise ValueError(f"the elements give different {name}s; give it once")
    db, username, password = (next(iter(found[n]), None) for n in ("db", "username", "password"))
    return SentinelURL(
        tuple(hosts),
        db=int(db) if isinstance(db, int) else 0,
        username=username if isinstance(username, str) else None,
        password=password if isinstance(password, str) else None,
    )


# Query parameters whose value is a secret (redis-py reads `?password=`), hidden by redact_url.
SECRET_QUERY_NAME = re.compile(r"pass|pwd|secret|token|auth|credential", re.IGNORECASE)
SECRET_PARAMETER = re.compile(r"([?&][^=&#]*(?:pass|pwd|secret|token|auth|credential)[^=&#]*=)"
                              r"[^&#]+", re.IGNORECASE)
REDACTED = "***"
ELEMENT_SEPARATOR = re.compile(r";(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")


def redact_url(url: str) -> str:
    """The URL with every password replaced, fit for logs and error messages: the user
    part's, a secret query parameter's (`?password=`), in each element of a `;`-joined
    (Sentinel) URL, and in a URL too malformed to parse."""
    return ";".join(_redact_one(part) for part in _elements(url))


def _elements(url: str) -> list[str]:
    """The URLs of a `;`-joined URL; a `;` inside a password is no separator."""
    return ELEMENT_SEPARATOR.split(url)


def _redact_one(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: hide what looks like a password
        url = re.sub(r"(//[^/?#@]*?:)[^/?#@]*@", rf"\1{REDACTED}@", url)
        return SECRET_PARAMETER.sub(rf"\1{REDACTED}", url)
    netloc = parts.netloc
    if parts.password is not None:
        host = netloc.rpartition("@")[2]
        user = f"{parts.username}:{REDACTED}@" if parts.username else f":{REDACTED}@"
        netloc = user + host
    query = "&".join(_redact_parameter(item) for item in parts.query.split("&"))
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return _unsplit(url, parts, netloc, query)


def _unsplit(url: str, parts: SplitResult, netloc: str, query: str) -> str:
    """`url` with another user part and query; unlike `urlunsplit`, an empty host keeps
    its `//` (`unix:///path`)."""
    text = f"{parts.scheme}://" if url.startswith(f"{parts.scheme}://") else (
        f"{parts.scheme}:" if parts.scheme else "")
    text += netloc + parts.path
    text += f"?{query}" if query else ""
    return text + (f"#{parts.fragment}" if parts.fragment else "")


def _redact_parameter(item: str) -> str:
    name, equals, value = item.partition("=")
    if equals and value and SECRET_QUERY_NAME.search(unquote(name)):
        return f"{name}={REDACTED}"
    return item


def url_secrets(url: str) -> list[str]:
    """The passwords `redact_url` hides in `url`, as written and decoded (to hide them in
    texts that quote the URL, such as an HTTP client's error)."""
    found = []
    for part in _elements(url):
        try:
            parts = urlsplit(part)
        except ValueError:
            continue
        if parts.password:
            found.append(parts.password)
        for item in parts.query.split("&"):
            name, equals, value = item.partition("=")
            if equals and value and SECRET_QUERY_NAME.search(unquote(name)):
                found.append(value)
    return [form for secret in found for form in dict.fromkeys((secret, unquote(secret)))]


# What redis-py reads from the query as well as from the user part; kombu (the broker) reads
# only the user part, and a `?password=` made it fail ("multiple values for 'password'").
CREDENTIAL_PARAMETERS = ("username", "password")


def credentials_in_user_part(url: str) -> str:
    """`url` with `?username=` and `?password=` moved into its user part
    (`redis://user:password@host`), where both redis-py and Celery's broker read them;
    each element of a `;`-joined URL alike. Raises `ValueError` (URL redacted) when a
    credential is given twice with different values."""
    return ";".join(_credentials_in_user_part(part) for part in _elements(url))


def _credentials_in_user_part(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url  # refused later, where the URL is used, with the reason
    found: dict[str, set[str]] = {name: set() for name in CREDENTIAL_PARAMETERS}
    kept = []
    for item in parts.query.split("&") if parts.query else []:
        name, _, value = item.partition("=")
        if unquote(name) in found:
            if value:
                found[unquote(name)].add(unquote(value))
        else:
            kept.append(item)
    if len(kept) == len(parts.query.split("&")) or not parts.query:
        return url
    given = {"username": parts.username, "password": parts.password}
    for name, values in found.items():
        if given[name]:
            values.add(unquote(given[name] or ""))
        if len(values) > 1:
            raise ValueError(f"{redact_url(url)!r} gives the {name} twice, with different "
                             "values: give it once")
    username = next(iter(found["username"]), None)
    password = next(iter(found["password"]), None)
    user = ""
    if username is not None or password is not None:
        user = quote(username or "", safe="")
        user += f":{quote(password, safe='')}" if password is not None else ""
        user += "@"
    return _unsplit(url, parts, user + parts.netloc.rpartition("@")[2], "&".join(kept))
