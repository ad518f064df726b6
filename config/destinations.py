"""Destinations: where events go, from the TOML file named by `MONITAO_PD_CONFIG` or, at run
time, from the registry in Redis (config/registry.py); both are this one `Destination` model.

```toml
[destinations.prod]
routing_key_env = "PD_KEY_PROD"   # or routing_key = "..." (32 characters)
region = "us"                     # "us" or "eu"; events_url overrides it
source = "MoniTao"
rate_limit_per_minute = 100
[destinations.prod.severity_map]
critical = "critical"
```
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)

from config import defaults
from config.errors import ConfigurationError, UndecryptableError
from config.maintenance import MaintenanceWindow
from config.secrets import KeyRing, fingerprint, stored_key_id

Severity = Literal["critical", "error", "warning", "info"]

REGION_EVENTS_URLS = {
    "us": "https://events.pagerduty.com/v2/enqueue",
    "eu": "https://events.eu.pagerduty.com/v2/enqueue",
}
# PagerDuty's REST API v2 (maintenance windows, webhook subscriptions, incident lookups).
REGION_API_URLS = {
    "us": "https://api.pagerduty.com",
    "eu": "https://api.eu.pagerduty.com",
}
SERVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9]{1,32}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
# The associated data sealing a run-time destination's REST API token: not a name (names
# have no '#'), so a routing key's ciphertext never opens as an API token or back.
API_TOKEN_CONTEXT = "{name}#pagerduty_api_token"

DEFAULT_SEVERITY_MAP: dict[str, Severity] = {
    "critical": "critical",
    "major": "error",
    "error": "error",
    "minor": "warning",
    "warning": "warning",
    "info": "info",
}

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# An account is a label (a MoniTao customer): used in metric labels and Redis key names.
ACCOUNT_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ROUTING_KEY_LENGTH = 32
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, repr=False)
class SealedKey:
    """A run-time destination's routing key as the registry stores it: sealed (see
    config/secrets.py), with its length and fingerprint for display. `ring` opens it; only
    workers are given one."""

    stored: str
    length: int
    fingerprint: str
    ring: KeyRing | None = None

    @property
    def key_id(self) -> str | None:
        return stored_key_id(self.stored)

    def opened_by(self, ring: KeyRing | None) -> SealedKey:
        """The same sealed secret, to be opened with `ring`."""
        return SealedKey(self.stored, self.length, self.fingerprint, ring)

    def __repr__(self) -> str:
        return f"SealedKey(key_id={self.key_id!r}, length={self.length})"


class Destination(BaseModel):
    """One PagerDuty service (or ruleset) the fleet delivers to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    routing_key: SecretStr | None = Field(None, repr=False)
    routing_key_env: str | None = None
    region: Literal["us", "eu"] = "us"
    events_url: str | None = None
    source: str = Field("MoniTao", min_length=1, max_length=255)
    client: str = Field("MoniTao", min_length=1, max_length=255)
    client_url: str | None = None
    rate_limit_per_minute: int = Field(defaults.RATE_LIMIT_PER_MINUTE, ge=1, le=100_000)
    severity_map: dict[str, Severity] = Field(default_factory=lambda: dict(DEFAULT_SEVERITY_MAP))
    maintenance: tuple[MaintenanceWindow, ...] = ()
    # Alert-storm coalescing: an unsent trigger followed by its resolve ends `superseded`
    # without reaching PagerDuty, and of several unsent triggers only the newest is sent.
    coalesce: bool = False
    # The MoniTao customer the destination belongs to: a label for listing and metrics.
    account: str | None = None
    # PagerDuty's REST API, optional (config/pagerduty_rest.py): the service the routing
    # key's integration belongs to, an API token, the From email an account-level token
    # needs, and the API's base URL (the region's by default).
    pagerduty_service_id: str | None = None
    pagerduty_api_token: SecretStr | None = Field(None, repr=False)
    pagerduty_api_token_env: str | None = None
    pagerduty_from: str | None = None
    pagerduty_api_url: str | None = None

    # A run-time destination's routing key, sealed (never a field: the file cannot set it).
    _sealed: SealedKey | None = PrivateAttr(None)
    # A run-time destination's REST API token, sealed likewise.
    _sealed_api_token: SealedKey | None = PrivateAttr(None)

    @field_validator("account")
    @classmethod
    def _plain_account(cls, value: str | None) -> str | None:
        if value is not None and not ACCOUNT_PATTERN.match(value):
            raise ValueError("must be 1-64 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError("must be 1-64 letters, digits, '_' or '-'")
        return value

    @field_validator("events_url", "client_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("pagerduty_api_url")
    @classmethod
    def _https_url(cls, value: str | None) -> str | None:
        # PagerDuty's client refuses anything else, and the token must not travel in clear
        if value is not None and not re.match(r"^https://[^\s/]+", value):
            raise ValueError("must be an https:// URL")
        return value.rstrip("/") if value is not None else value

    @field_validator("pagerduty_service_id")
    @classmethod
    def _service_id(cls, value: str | None) -> str | None:
        if value is not None and not SERVICE_ID_PATTERN.match(value):
            raise ValueError("must be a PagerDuty service id (letters and digits, e.g. PABC123)")
        return value

    @field_validator("pagerduty_from")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not EMAIL_PATTERN.match(value):
            raise ValueError("must be an email address (PagerDuty's From header)")
        return value

    @field_validator("source", "client", "events_url", "client_url", "pagerduty_from",
                     "pagerduty_api_url")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        # shown by every command and stored at run time from any caller: no terminal tricks
        if value is not None and CONTROL.search(value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("severity_map")
    @classmethod
    def _non_empty_map(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        if not value:
            raise ValueError("must map at least one MoniTao level")
        bad = [level for level in value if not level or CONTROL.search(level)]
        if bad:
            raise ValueError(f"level {bad[0]!r} is empty or has control characters")
        return value

    @property
    def url(self) -> str:
        """The Events API endpoint: the explicit URL, or the region's."""
        return self.events_url or REGION_EVENTS_URLS[self.region]

    @property
    def api_url(self) -> str:
        """PagerDuty's REST API base URL: the explicit one, or the region's."""
        return self.pagerduty_api_url or REGION_API_URLS[self.region]

    @property
    def has_rest(self) -> bool:
        """Whether the destination has REST credentials (a service id and an API token)."""
        return self.pagerduty_service_id is not None and (
            self.pagerduty_api_token is not None or self._sealed_api_token is not None
            or self.pagerduty_api_token_env is not None)

    def api_token(self) -> str:
        """The REST API token, opened here just before use (as `secret()` does the routing
        key): `UndecryptableError` when a sealed one cannot be opened, ConfigurationError
        when there is none."""
        if self.pagerduty_api_token is not None:
            return self.pagerduty_api_token.get_secret_value()
        sealed = self._sealed_api_token
        if sealed is not None:
            if sealed.ring is None:
                raise UndecryptableError(f"{self.name}: MONITAO_PD_SECRET_KEYS is not set in "
                                         "this process, so its API token cannot be opened")
            return sealed.ring.open(sealed.stored, API_TOKEN_CONTEXT.format(name=self.name))
        raise ConfigurationError([f"destinations.{self.name}: no PagerDuty API token"])

    @property
    def sealed_api_token(self) -> SealedKey | None:
        """A run-time destination's sealed REST API token (None otherwise)."""
        return self._sealed_api_token

    def api_token_info(self) -> dict[str, Any] | None:
        """The REST API token described (as `routing_key_info`), or None without one."""
        sealed = self._sealed_api_token
        if sealed is not None:
            return {"origin": "registry", "variable": None, "resolved": True,
                    "length": sealed.length, "fingerprint": sealed.fingerprint,
                    "key_id": sealed.key_id}
        if self.pagerduty_api_token is None and self.pagerduty_api_token_env is None:
            return None
        plain = (self.pagerduty_api_token.get_secret_value()
                 if self.pagerduty_api_token is not None else None)
        return {"origin": "env" if self.pagerduty_api_token_env else "inline",
                "variable": self.pagerduty_api_token_env, "resolved": plain is not None,
                "length": len(plain) if plain is not None else None,
                "fingerprint": fingerprint(plain) if plain is not None else None,
                "key_id": None}

    def severity_for(self, level: str) -> Severity:
        """PagerDuty's severity for a MoniTao level; raises KeyError for an unmapped level."""
        return self.severity_map[level]

    @classmethod
    def from_registry(cls, fields: Mapping[str, Any], sealed: SealedKey, *,
                      validate: bool = True,
                      sealed_api_token: SealedKey | None = None) -> Destination:
        """A run-time destination: validated `fields` and its sealed routing key (and REST
        API token). Without `validate`, the fields are taken as stored (they were validated
        when written): for a producer, which reads only the name and the severity map."""
        destination = cls.model_validate(fields) if validate else cls.model_construct(**fields)
        destination._sealed = sealed
        destination._sealed_api_token = sealed_api_token
        return destination

    @property
    def origin(self) -> Literal["file", "registry"]:
        """Where the destination is defined: the destinations file or the run-time registry."""
        return "registry" if self._sealed is not None else "file"

    @property
    def sealed_key(self) -> SealedKey | None:
        """A run-time destination's sealed routing key (None for the file's)."""
        return self._sealed

    def with_key_ring(self, ring: KeyRing | None) -> Destination:
        """This destination, able to open its sealed routing key with `ring` (workers)."""
        if self._sealed is None or self._sealed.ring is ring:
            return self
        copy = self.model_copy()
        copy._sealed = self._sealed.opened_by(ring)
        if self._sealed_api_token is not None:
            copy._sealed_api_token = self._sealed_api_token.opened_by(ring)
        return copy

    def secret(self) -> str:
        """The routing key. A run-time destination's is opened here, just before use, with
        the key ring it was given: `UndecryptableError` when that fails or there is none.
        Raises ConfigurationError when a file destination's key was not resolved."""
        if self.routing_key is not None:
            return self.routing_key.get_secret_value()
        sealed = self._sealed
        if sealed is not None:
            if sealed.ring is None:
                raise UndecryptableError(f"{self.name}: MONITAO_PD_SECRET_KEYS is not set in "
                                         "this process, so its routing key cannot be opened")
            return sealed.ring.open(sealed.stored, self.name)
        raise ConfigurationError([f"destinations.{self.name}: routing key is not available"])

    def routing_key_info(self) -> dict[str, Any]:
        """The routing key described (origin, length, fingerprint, key id), never shown."""
        sealed = self._sealed
        if sealed is not None:
            return {"origin": "registry", "variable": None, "resolved": True,
                    "length": sealed.length, "fingerprint": sealed.fingerprint,
                    "key_id": sealed.key_id}
        plain = self.routing_key.get_secret_value() if self.routing_key is not None else None
        return {"origin": "env" if self.routing_key_env else "inline",
                "variable": self.routing_key_env, "resolved": plain is not None,
                "length": len(plain) if plain is not None else None,
                "fingerprint": fingerprint(plain) if plain is not None else None,
                "key_id": None}

    def describe_routing_key(self) -> str:
        """How the routing key is configured, without revealing any character of it."""
        info = self.routing_key_info()
        if info["origin"] == "registry":
            return (f"sealed in the registry, {info['length']} characters, sha256 "
                    f"{info['fingerprint']}, key id {info['key_id']}")
        origin = f"from ${self.routing_key_env}" if self.routing_key_env else "inline"
        if not info["resolved"]:
            return f"not resolved ({origin})"
        return f"set, {info['length']} characters, {origin}, sha256 {info['fingerprint']}"


def load_destinations(
    path: Path | str | None,
    *,
    environ: Mapping[str, str] | None = None,
    resolve_secrets: bool = True,
) -> dict[str, Destination]:
    """Read and validate the destinations file; one problem line per error, all at once.

    With `resolve_secrets=False` (the producer's view) routing keys are not required: the
    producer needs destination names and severity maps, never a secret.
    """
    if path is None:
        raise ConfigurationError(["MONITAO_PD_CONFIG: no destinations file is configured"])
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise ConfigurationError([f"{path}: cannot read ({exc.strerror})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError([f"{path}: not valid TOML ({exc})"]) from None
    return parse_destinations(
        document, environ=os.environ if environ is None else environ,
        resolve_secrets=resolve_secrets, origin=str(path),
    )


def parse_destinations(
    document: Mapping[str, object],
    *,
    environ: Mapping[str, str],
    resolve_secrets: bool = True,
    origin: str = "destinations",
) -> dict[str, Destination]:
    """Validate an already-parsed destinations document (see `load_destinations`)."""
    problems: list[str] = []
    unknown = sorted(set(document) - {"destinations"})
    problems.extend(f"{origin}: unknown top-level table [{name}]" for name in unknown)
    tables = document.get("destinations")
    if not isinstance(tables, dict) or not tables:
        problems.append(f"{origin}: no [destinations.NAME] table")
        raise ConfigurationError(problems)

    result: dict[str, Destination] = {}
    for name, table in tables.items():
        where = f"destinations.{name}"
        if not isinstance(table, dict):
            problems.append(f"{where}: must be a table")
            continue
        raw = dict(table)
        windows = raw.get("maintenance")
        if isinstance(windows, list):
            raw["maintenance"] = [
                dict(w, destination=name, origin="config", id=w.get("id", f"{name}-{i}"))
                if isinstance(w, dict) else w
                for i, w in enumerate(windows, start=1)
            ]
        key_problem = _resolve_routing_key(raw, environ, resolve_secrets)
        if key_problem:
            problems.append(f"{where}: {key_problem}")
        problems.extend(f"{where}: {p}" for p in _resolve_api_token(raw, environ,
                                                                      resolve_secrets))
        try:
            result[name] = Destination(name=name, **raw)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, f"{where}."))
    if problems:
        raise ConfigurationError(problems)
    return result


def validation_problems(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per error of a `Destination`'s validation: the field, the reason, the value
    (never a routing key's, nor an unknown field's: a misnamed field may hold a secret)."""
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        secret_or_unknown = field in ("routing_key", "pagerduty_api_token") or (
            error["type"] == "extra_forbidden")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        shown = (
            "" if secret_or_unknown or isinstance(value, dict | list)
            else f" (got {value!r})"
        )
        problems.append(f"{prefix}{field}: {message}{shown}")
    return problems


def routing_key_problem(value: object) -> str | None:
    """Why `value` is not a routing key (32 letters or digits), never showing it; or None."""
    if isinstance(value, str) and len(value) == ROUTING_KEY_LENGTH and value.isalnum() and (
        value.isascii()
    ):
        return None
    length = len(value) if isinstance(value, str) else 0
    return (f"must be {ROUTING_KEY_LENGTH} letters or digits "
            f"(got {length} characters; value not shown)")


def looks_like_routing_key(text: str) -> bool:
    """Whether a name given for a variable is shaped like a routing key itself."""
    # Variable names are rarely 32 letters and digits with no underscore; keys always are.
    return len(text) == ROUTING_KEY_LENGTH and text.isalnum() and not text.isalpha()


def _resolve_routing_key(
    raw: dict[str, object], environ: Mapping[str, str], resolve_secrets: bool
) -> str | None:
    """Put the routing key in place (from the environment if referenced); return a problem."""
    inline, env_name = raw.get("routing_key"), raw.get("routing_key_env")
    if inline is not None and env_name is not None:
        return "give either routing_key or routing_key_env, not both"
    if inline is None and env_name is None:
        return "routing_key or routing_key_env is required" if resolve_secrets else None
    if env_name is not None:
        if not isinstance(env_name, str) or not env_name:
            return "routing_key_env must name an environment variable"
        if not resolve_secrets:
            return None
        if env_name not in environ:
            if looks_like_routing_key(env_name):
                return ("routing_key_env looks like a routing key itself (not shown); "
                        "give the name of the environment variable that holds it")
            return f"routing_key_env: environment variable ${env_name} is not set"
        inline = environ[env_name]
        raw["routing_key"] = inline
    if not resolve_secrets:
        raw.pop("routing_key", None)
        return None
    problem = routing_key_problem(inline)
    return f"routing_key {problem}" if problem else None


def _resolve_api_token(raw: dict[str, object], environ: Mapping[str, str],
                       resolve_secrets: bool) -> list[str]:
    """Put the REST API token in place (from the environment if referenced) and check the
    REST credentials come whole; return the problems."""
    inline, env_name = raw.get("pagerduty_api_token"), raw.get("pagerduty_api_token_env")
    problems = []
    if inline is not None and env_name is not None:
        problems.append("give either pagerduty_api_token or pagerduty_api_token_env, not both")
    has_token = inline is not None or env_name is not None
    if has_token != (raw.get("pagerduty_service_id") is not None):
        problems.append("pagerduty_service_id and an API token (pagerduty_api_token_env) "
                        "go together: give both or neither")
    if env_name is not None and inline is None:
        if not isinstance(env_name, str) or not env_name:
            problems.append("pagerduty_api_token_env must name an environment variable")
        elif resolve_secrets:
            if env_name in environ:
                raw["pagerduty_api_token"] = environ[env_name]
            else:
                problems.append(f"pagerduty_api_token_env: environment variable ${env_name} "
                                "is not set")
    if not resolve_secrets:
        raw.pop("pagerduty_api_token", None)
    token = raw.get("pagerduty_api_token")
    if token is not None:
        token_problem = api_token_problem(token)
        if token_problem:
            problems.append(f"pagerduty_api_token {token_problem}")
    return problems


def api_token_problem(value: object) -> str | None:
    """Why `value` is not a plausible PagerDuty REST API token, never showing it; or None."""
    if isinstance(value, str) and 8 <= len(value) <= 200 and value.isascii() and (
        value.isprintable() and " " not in value
    ):
        return None
    length = len(value) if isinstance(value, str) else 0
    return ("must be 8-200 printable characters without spaces "
            f"(got {length} characters; value not shown)")
