"""Whether destinations' REST credentials work: a `GET` of each one's PagerDuty service.

`config check` verifies every destination with credentials now; `status` (the CLI's, the
API's, the console's) shows what the last check found, checking again those whose result
is older than `FRESH_SECONDS`, a few per call, so a status page never waits on PagerDuty
for long or calls it for each of thousands of destinations. Results are kept in one Redis
hash (name -> JSON) so every door and replica shows the same.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from config.destinations import Destination
from config.errors import ConfigurationError, UndecryptableError
from config.keyspace import Keyspace
from config.pagerduty_rest import RestError, rest_client
from config.registry import Registry
from config.text import printable

FRESH_SECONDS = 300.0
CHECKS_PER_STATUS = 10
# Run-time destinations whose results `status` shows (the file's are all shown).
LISTED = 200
PARALLEL = 8
# A status call waits at most about this long for PagerDuty (one attempt, this timeout).
STATUS_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class RestCheck:
    """One destination's credentials checked: `problem` None when PagerDuty accepted them;
    `unreachable` when there was no answer (not a configuration error)."""

    destination: str
    service_id: str
    problem: str | None
    unreachable: bool = False
    checked_at: float = 0.0

    @property
    def refused(self) -> bool:
        """Whether the credentials are wrong (a configuration error), not merely unchecked
        or without an answer from PagerDuty."""
        return self.problem is not None and not self.unreachable

    @property
    def line(self) -> str:
        """The result in one line."""
        verdict = "OK" if self.problem is None else self.problem
        return printable(f"{self.destination}: service {self.service_id}: {verdict}")


def check_one(destination: Destination, *, ca_file: Path | str | None = None,
              timeout: float = STATUS_TIMEOUT_SECONDS, attempts: int = 1) -> RestCheck:
    """`GET /services/{id}` with the destination's credentials, as a `RestCheck`."""
    service = destination.pagerduty_service_id or "-"
    now = time.time()
    try:
        client = rest_client(destination, ca_file=ca_file, timeout=timeout, attempts=attempts)
    except (UndecryptableError, ConfigurationError) as exc:
        return RestCheck(destination.name, service, f"the API token cannot be opened ({exc})",
                         checked_at=now)
    except RestError as exc:
        return RestCheck(destination.name, service, exc.reason, checked_at=now)
    if client is None:
        return RestCheck(destination.name, service, "no REST credentials", checked_at=now)
    with client:
        try:
            client.service()
        except RestError as exc:
            return RestCheck(destination.name, service, exc.reason,
                             unreachable=exc.status is None, checked_at=now)
    return RestCheck(destination.name, service, None, checked_at=now)


def check_all(destinations: Iterable[Destination], *, ca_file: Path | str | None = None,
              timeout: float = STATUS_TIMEOUT_SECONDS) -> list[RestCheck]:
    """`check_one` of each destination with REST credentials, several at once."""
    chosen = [d for d in destinations if d.has_rest]
    if not chosen:
        return []
    with ThreadPoolExecutor(min(PARALLEL, len(chosen))) as pool:
        return list(pool.map(lambda d: check_one(d, ca_file=ca_file, timeout=timeout), chosen))


class RestChecks:
    """The last check of each destination's credentials, in Redis."""

    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self.client, self.key = client, keys.rest_checks

    def record(self, checks: Iterable[RestCheck]) -> None:
        """Keep these results (the newest per destination)."""
        mapping = {c.destination: json.dumps(asdict(c)) for c in checks}
        if mapping:
            self.client.hset(self.key, mapping=mapping)

    def read(self, names: Iterable[str]) -> dict[str, RestCheck]:
        """The kept result of each of `names` that has one."""
        names = list(names)
        if not names:
            return {}
        found = {}
        for name, stored in zip(names, self.client.hmget(self.key, names), strict=True):
            if stored:
                try:
                    found[name] = RestCheck(**json.loads(stored))
                except (ValueError, TypeError):
                    continue
        return found

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the results of destinations not in `keep` (removed, or without credentials)."""
        stale = set(self.client.hkeys(self.key)) - set(keep)
        if stale:
            self.client.hdel(self.key, *stale)

    def refreshed(self, registry: Registry, *, ca_file: Path | str | None = None,
                  listed: int = LISTED, limit: int = CHECKS_PER_STATUS,
                  now: float | None = None) -> list[RestCheck]:
        """The result of each destination with credentials (`registry.rest_names(listed)`):
        kept ones younger than `FRESH_SECONDS`; the others checked now, at most `limit`
        (only those are loaded), the rest reported as they were, or not checked yet."""
        now = time.time() if now is None else now
        names = registry.rest_names(listed)
        kept = self.read(names)
        stale = [n for n in names
                 if n not in kept or now - kept[n].checked_at > FRESH_SECONDS][:limit]
        due = registry.with_rest(names=stale)
        # a process that cannot open a token (no key ring, the file's variable unset
        # here) checks nothing for it and keeps what a process that can found
        closed = {d.name: why for d in due if (why := _unopened(d))}
        fresh = check_all([d for d in due if d.name not in closed], ca_file=ca_file)
        self.record(fresh)
        self.forget(names)
        results = {**kept, **{c.destination: c for c in fresh}}
        services = {d.name: d.pagerduty_service_id or "-" for d in due}
        return [results.get(n) or RestCheck(
            n, services.get(n, "-"),
            f"not checked here: {closed[n]}" if n in closed else "not checked yet",
            unreachable=True) for n in names]


def _unopened(destination: Destination) -> str | None:
    """Why this process cannot open the destination's API token, or None."""
    try:
        destination.api_token()
    except (UndecryptableError, ConfigurationError) as exc:
        return str(exc)
    return None


def summary(checks: list[RestCheck], shown: int = 3) -> str:
    """Checks in one line: how many are OK, and what is wrong with the first few."""
    bad = [c for c in checks if c.problem is not None]
    text = f"{len(checks) - len(bad)} of {len(checks)} destination(s) OK"
    if bad:
        text += "; " + "; ".join(c.line for c in bad[:shown])
        if len(bad) > shown:
            text += f"; {len(bad) - shown} more"
    return text


def as_dict(checks: list[RestCheck]) -> Mapping[str, dict[str, object]]:
    """JSON-ready results, by destination."""
    return {c.destination: {"service_id": c.service_id, "ok": c.problem is None,
                            "problem": c.problem, "unreachable": c.unreachable,
                            "checked_at": c.checked_at} for c in checks}
