"""PagerDuty's REST API v2, for what the Events API cannot do: maintenance windows on a
destination's service, webhook subscriptions, and incident lookups.

Calls go through PagerDuty's own client, `pagerduty.RestApiV2Client` (its retries on 429,
5xx and network errors, the `From` header, `Authorization: Token token=...`), bounded here:
a few attempts with short pauses and a per-call timeout, so a PagerDuty outage costs a
caller seconds, not the client's default of retrying 429s for ever. Every failure becomes a
`RestError` of one line (the call, the HTTP status, PagerDuty's own message with control
characters escaped and the token and anything shaped like a routing key masked); the API
token is opened from the destination only here, and never appears in one.

The client insists on `https://`; `MONITAO_PD_REST_CA_FILE` names a CA bundle to trust
instead of the system's (a TLS-inspecting proxy, or the simulator's throwaway CA).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pagerduty

from config import defaults
from config.destinations import Destination
from config.text import mask_routing_keys, printable

# The webhook v3 event types the receiver acts on (webhooks/events.py).
INCIDENT_EVENTS = ("incident.acknowledged", "incident.resolved", "incident.unacknowledged",
                   "incident.reassigned", "incident.escalated", "incident.reopened",
                   "incident.triggered", "incident.annotated")
RETRYABLE_STATUSES = (429, 500, 502, 503, 504)
SLEEP_SECONDS = 0.5
MESSAGE_CHARS = 300


class RestError(Exception):
    """A REST call that failed: `reason` in one line (never the token), the HTTP status
    (None: no answer), and whether trying again later may help."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later unchanged (an outage, a rate limit)."""
        return self.status is None or self.status in RETRYABLE_STATUSES


@dataclass(frozen=True)
class RestCredentials:
    """A destination's REST credentials, its token opened (keep it no longer than a call)."""

    destination: str
    service_id: str
    api_url: str
    from_email: str | None
    token: str = field(repr=False)

    @classmethod
    def of(cls, destination: Destination) -> RestCredentials | None:
        """The credentials of `destination`, or None without any. Opening a sealed token
        raises `UndecryptableError` (wrong key ring), ConfigurationError (none)."""
        if not destination.has_rest or destination.pagerduty_service_id is None:
            return None
        return cls(destination.name, destination.pagerduty_service_id, destination.api_url,
                   destination.pagerduty_from, destination.api_token())


class PagerDutyRest:
    """The REST calls the fleet makes for one destination's service."""

    def __init__(self, credentials: RestCredentials, *, ca_file: Path | str | None = None,
                 timeout: float = defaults.REST_TIMEOUT_SECONDS,
                 attempts: int = defaults.REST_ATTEMPTS) -> None:
        self.credentials = credentials
        self.service_id = credentials.service_id
        try:
            self._client = pagerduty.RestApiV2Client(
                credentials.token, default_from=credentials.from_email,
                base_url=credentials.api_url, verify=_verify(ca_file))
        except pagerduty.UrlError as exc:
            raise RestError(f"pagerduty_api_url: {printable(exc)}") from None
        self._client.timeout = timeout
        self._client.sleep_timer = SLEEP_SECONDS
        self._client.max_network_attempts = attempts - 1
        self._client.max_http_attempts = attempts
        self._client.retry = dict.fromkeys(RETRYABLE_STATUSES, attempts - 1)

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    def __enter__(self) -> PagerDutyRest:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- services ---------------------------------------------------------------------------

    def service(self) -> dict[str, Any]:
        """The destination's service (verifies the token, the From email and the id)."""
        return self._call("GET", f"/services/{self.service_id}")["service"]

    # --- maintenance windows ------------------------------------------------------------------

    def create_maintenance_window(self, start: datetime, end: datetime,
                                  description: str) -> dict[str, Any]:
        """Create a window on the service; return PagerDuty's (with its `id`)."""
        body = {"maintenance_window": self._window(start, end, description)}
        return self._call("POST", "/maintenance_windows", json=body,
                          expect=(201, 200))["maintenance_window"]

    def update_maintenance_window(self, window_id: str, start: datetime, end: datetime,
                                  description: str) -> dict[str, Any] | None:
        """Change a window; None when PagerDuty has no window of that id any more (404), or
        only an ended one, which cannot change (405)."""
        body = {"maintenance_window": self._window(start, end, description)}
        answer = self._call("PUT", f"/maintenance_windows/{window_id}", json=body,
                            missing_ok=True, gone_statuses=(404, 405))
        return None if answer is None else answer["maintenance_window"]

    def delete_maintenance_window(self, window_id: str) -> None:
        """Delete a future window, end an ongoing one; one already gone or ended is fine."""
        self._call("DELETE", f"/maintenance_windows/{window_id}", expect=(204, 200),
                   missing_ok=True, gone_statuses=(404, 405))

    def maintenance_windows(self) -> Iterator[dict[str, Any]]:
        """The service's open (ongoing and future) windows, every page."""
        params = {"service_ids[]": [self.service_id], "filter": "open"}
        yield from self._pages("/maintenance_windows", "maintenance_windows", params)

    # --- webhook subscriptions ----------------------------------------------------------------

    def create_webhook_subscription(self, url: str, description: str,
                                    events: tuple[str, ...] = INCIDENT_EVENTS) -> (
            tuple[dict[str, Any], str]):
        """Subscribe `url` to the service's incident events; return the subscription (its
        secret removed) and the signing secret, which PagerDuty gives only now."""
        body = {"webhook_subscription": {
            "type": "webhook_subscription",
            "delivery_method": {"type": "http_delivery_method", "url": url},
            "events": list(events),
            "filter": {"type": "service_reference", "id": self.service_id},
            "description": description,
        }}
        subscription = self._call("POST", "/webhook_subscriptions", json=body,
                                  expect=(201, 200))["webhook_subscription"]
        method = dict(subscription.get("delivery_method") or {})
        secret = method.pop("secret", None)
        if not isinstance(secret, str) or not secret:
            raise RestError("POST /webhook_subscriptions: PagerDuty's answer has no signing "
                            "secret (delivery_method.secret)")
        return {**subscription, "delivery_method": method}, secret

    def delete_webhook_subscription(self, subscription_id: str) -> bool:
        """Delete a subscription; False when PagerDuty had none of that id."""
        try:
            self._call("DELETE", f"/webhook_subscriptions/{subscription_id}",
                       expect=(204, 200))
        except RestError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def webhook_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """One subscription (no secret), or None."""
        answer = self._call("GET", f"/webhook_subscriptions/{subscription_id}",
                            missing_ok=True)
        return None if answer is None else answer["webhook_subscription"]

    # --- incidents ------------------------------------------------------------------------------

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        """PagerDuty's incident (with its `incident_key`), or None for an unknown id."""
        answer = self._call("GET", f"/incidents/{incident_id}", missing_ok=True)
        return None if answer is None else answer["incident"]

    # --- helpers ----------------------------------------------------------------------------------

    def _window(self, start: datetime, end: datetime, description: str) -> dict[str, Any]:
        return {"type": "maintenance_window", "start_time": start.isoformat(),
                "end_time": end.isoformat(), "description": description,
                "services": [{"id": self.service_id, "type": "service_reference"}]}

    def _pages(self, path: str, wrapper: str,
               params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        offset, limit = 0, 100
        while True:
            page = self._call("GET", path, params={**params, "offset": offset, "limit": limit})
            items = page.get(wrapper) or []
            yield from items
            if not page.get("more") or not items:
                return
            offset += len(items)

    def _call(self, method: str, path: str, *, expect: tuple[int, ...] = (200,),
              missing_ok: bool = False, gone_statuses: tuple[int, ...] = (404,),
              **kwargs: Any) -> Any:
        """One call through the client; its JSON (None for 204, or for a missing resource
        when `missing_ok`). Raises RestError."""
        what = f"{method} {path}"
        try:
            response = self._client.request(method, path, **kwargs)
        except pagerduty.HttpError as exc:  # the client raises 401 itself, naming the token
            response = exc.response
        except (pagerduty.Error, httpx.HTTPError) as exc:
            cause = exc.__cause__ or exc
            raise RestError(f"{what}: no answer from {self.credentials.api_url} "
                            f"({cause.__class__.__name__})") from None
        status = response.status_code
        if status in expect:
            return None if status == 204 or not response.content else _json(response, what)
        if missing_ok and status in gone_statuses:
            return None
        raise RestError(f"{what}: {self._describe(response)}", status)

    def _describe(self, response: httpx.Response) -> str:
        """An error answer in a few words: the status and what PagerDuty said, made safe."""
        status = response.status_code
        hint = {401: "the API token is not valid (or is for another region)",
                403: "the API token may not do this (an account-level token needs "
                     "pagerduty_from)",
                404: f"PagerDuty has no such resource (is service {self.service_id} "
                     "right?)",
                429: "PagerDuty's rate limit, still after retries"}.get(status)
        said = _error_message(response)
        text = f"HTTP {status}" + (f", {hint}" if hint else "") + (f": {said}" if said else "")
        return self._safe(text)

    def _safe(self, text: str) -> str:
        text = mask_routing_keys(text, (self.credentials.token,))
        return printable(text)[:MESSAGE_CHARS]


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise RestError(f"{what}: HTTP {response.status_code} with a body that is not "
                        "JSON", response.status_code) from None


def _error_message(response: httpx.Response) -> str:
    """PagerDuty's `{"error": {"message", "errors": [...]}}`, flattened."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(error, dict):
        return str(error) if error else ""
    message = str(error.get("message") or "")
    details = error.get("errors")
    if isinstance(details, list) and details:
        message += " (" + "; ".join(str(d) for d in details[:5]) + ")"
    return message


def _verify(ca_file: Path | str | None) -> ssl.SSLContext | bool:
    """What the client verifies PagerDuty's certificate with: the system's CAs, or a context
    trusting `ca_file` (httpx deprecates `verify=<path>`)."""
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise RestError(f"MONITAO_PD_REST_CA_FILE: cannot be read as a CA bundle "
                        f"({exc.__class__.__name__})") from None


def rest_client(destination: Destination, *, ca_file: Path | str | None = None,
                timeout: float = defaults.REST_TIMEOUT_SECONDS,
                attempts: int = defaults.REST_ATTEMPTS) -> PagerDutyRest | None:
    """A REST client for `destination` (None when it has no REST credentials). Opening its
    token may raise `UndecryptableError`."""
    credentials = RestCredentials.of(destination)
    if credentials is None:
        return None
    return PagerDutyRest(credentials, ca_file=ca_file, timeout=timeout, attempts=attempts)
