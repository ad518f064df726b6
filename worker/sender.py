"""Posting a body to the Events API and classifying what came back.

The texts of an `Outcome` are kept (event record, timeline, dead letters) and shown (logs,
`dlq`, `timeline`, `test-destination`), so they are made safe where they are built: the
routing key sent (echoed by an endpoint, in any letter case), anything else shaped like a
routing key and any URL password are masked before the text is cut to its length.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx

from config.settings import url_secrets
from config.text import mask_routing_keys

Kind = Literal["delivered", "retry", "permanent"]

MAX_ERROR_TEXT = 500
# Gateway answers: a proxy in front of PagerDuty may have passed the request on before it
# failed, so PagerDuty may have processed it.
GATEWAY_STATUSES = (502, 504)
# How much of one text from the endpoint is looked at: bounds the work an answer can cause.
MAX_SCANNED_TEXT = 64 * 1024
USER_AGENT = "monitao-pagerduty/0.1"
BASE_HEADERS = (("User-Agent", USER_AGENT),)
JSON_HEADERS = (*BASE_HEADERS, ("Content-Type", "application/json"))


@dataclass(frozen=True)
class Outcome:
    """What one attempt achieved, without any part of the request body or any routing key."""

    kind: Kind
    http_status: int | None
    latency_ms: float
    error: str = ""
    errors: list[str] = field(default_factory=list)
    dedup_key: str | None = None
    # The request went out whole but no answer says what became of it: PagerDuty may still
    # process it, later than anything sent after it (worker/delivery.py orders around it).
    ambiguous: bool = False
    # The attempt's deadline passed before its request was written: nothing was sent, and
    # it says nothing about the endpoint.
    abandoned: bool = False

    @property
    def rate_limited(self) -> bool:
        """PagerDuty answered 429: the event was not ingested."""
        return self.http_status == 429


def classify(status: int) -> Kind:
    """Delivered on 2xx; retried on 429, 408 and 5xx; permanent on any other status."""
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "permanent"


class DeadlinePassed(Exception):
    """The attempt's deadline passed before its request was written: nothing was sent."""


# Errors raised once the request was written whole: it may have been processed.
ANSWER_LOST = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


class Poster(Protocol):
    """Posts bytes and returns (status, body); raises httpx's errors when no answer came,
    and `DeadlinePassed` when `deadline` (a `time.monotonic()` reading) passed before the
    request could be written.

    `worker.http_transport.ThreadConnectionsTransport` is the worker's. The functions below
    also take an `httpx.Client` (as a `ClientPoster`): tests mount httpx's MockTransport on
    one.
    """

    def post(self, url: str, content: bytes, headers: Sequence[tuple[str, str]], *,
             deadline: float | None = None) -> tuple[int, bytes]: ...


@dataclass(frozen=True)
class ClientPoster:
    """An `httpx.Client` as a `Poster` (the deadline bounds the whole request)."""

    client: httpx.Client

    def post(self, url: str, content: bytes, headers: Sequence[tuple[str, str]], *,
             deadline: float | None = None) -> tuple[int, bytes]:
        timeout: Any = httpx.USE_CLIENT_DEFAULT
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlinePassed("the attempt's deadline passed before its request")
            timeout = remaining
        response = self.client.post(url, content=content, headers=list(headers),
                                    timeout=timeout)
        return response.status_code, response.content


def open_connection(poster: Poster | httpx.Client, url: str) -> Outcome | None:
    """Open `poster`'s connection to `url` ahead of a request, when it can (the worker's
    transport does); None when open, else the failure as the attempt's outcome (retried,
    and PagerDuty cannot have had anything)."""
    opener = getattr(poster, "open", None)
    if opener is None or isinstance(poster, httpx.Client):
        return None
    started = time.perf_counter()
    try:
        opener(url)
    except httpx.TimeoutException as exc:
        return Outcome("retry", None, _ms(started), f"timeout: {exc.__class__.__name__}")
    except httpx.HTTPError as exc:
        reason = _safe_text(f"{exc.__class__.__name__}: {exc}", url, ())
        return Outcome("retry", None, _ms(started), reason)
    return None


def post_event(poster: Poster | httpx.Client, url: str, body: dict[str, Any], *,
               deadline: float | None = None) -> Outcome:
    """POST `body` as JSON to `url` and classify the answer; network failures are retryable.

    Error texts never include the body; the body's routing key, key-shaped tokens and URL
    passwords are masked in whatever the endpoint answered.
    """
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                         allow_nan=False).encode()  # as httpx encodes `json=`
    key = body.get("routing_key")
    return _post(poster, url, content, JSON_HEADERS, deadline,
                 (key,) if isinstance(key, str) else ())


def post_raw(poster: Poster | httpx.Client, url: str, content: bytes,
             headers: dict[str, str], *, deadline: float | None = None) -> Outcome:
    """POST exact bytes (a signed body) and classify the answer like `post_event`."""
    return _post(poster, url, content, (*BASE_HEADERS, *headers.items()), deadline)


def _post(poster: Poster | httpx.Client, url: str, content: bytes,
          headers: Sequence[tuple[str, str]], deadline: float | None,
          keys: Sequence[str] = ()) -> Outcome:
    if isinstance(poster, httpx.Client):
        poster = ClientPoster(poster)
    started = time.perf_counter()
    try:
        status, answer = poster.post(url, content, headers, deadline=deadline)
    except DeadlinePassed:
        return Outcome("retry", None, _ms(started),
                       "abandoned: the attempt's deadline passed before its request was "
                       "written (nothing was sent)", abandoned=True)
    except httpx.TimeoutException as exc:
        return Outcome("retry", None, _ms(started), f"timeout: {exc.__class__.__name__}",
                       ambiguous=isinstance(exc, ANSWER_LOST))
    except httpx.HTTPError as exc:
        reason = _safe_text(f"{exc.__class__.__name__}: {exc}", url, keys)
        return Outcome("retry", None, _ms(started), reason,
                       ambiguous=isinstance(exc, ANSWER_LOST))
    latency = _ms(started)
    kind = classify(status)
    data = _json_object(answer)
    if kind == "delivered":
        return Outcome(kind, status, latency, dedup_key=_dedup_key(data.get("dedup_key"), keys))
    message = str(data.get("message") or data.get("status") or "")
    errors = [_safe_text(e, url, keys) for e in _error_list(data.get("errors"))]
    error = f"HTTP {status}" + (f": {message}" if message else "")
    return Outcome(kind, status, latency, _safe_text(error, url, keys), errors,
                   ambiguous=status in GATEWAY_STATUSES)


def _safe_text(text: str, url: str, keys: Sequence[str]) -> str:
    """Text from the endpoint or the network, fit to keep and show: URL passwords, the
    routing keys and key-shaped tokens masked (before it is cut, so no part of one shows)."""
    # Masking leaves more than a quarter of a text, so a key cut in two by the first cut
    # lies far past the second one and is never shown.
    return mask_routing_keys(_scrub(text[:MAX_SCANNED_TEXT], url), keys)[:MAX_ERROR_TEXT]


def _dedup_key(value: object, keys: Sequence[str]) -> str | None:
    """PagerDuty's dedup_key (often 32 hex digits, so only the routing key itself masked)."""
    return mask_routing_keys(value, keys, key_shaped=False) if isinstance(value, str) else None


def _json_object(answer: bytes) -> dict[str, Any]:
    try:
        data = json.loads(answer)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_list(value: object) -> list[str]:
    """PagerDuty's `errors` as a list of strings, whatever shape the answer gave it."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [str(e) for e in items if e is not None]


def _scrub(text: str, url: str) -> str:
    """`text` without the URL's passwords (user part, `?token=`...), in whatever form (case,
    quoting) they appear."""
    for secret in url_secrets(url):
        for form in {secret, quote(secret, safe="")}:
            text = re.sub(re.escape(form), "***", text, flags=re.IGNORECASE)
    return text


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
