"""Posting a body to the Events API and classifying what came back."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import quote, unquote, urlsplit

import httpx

Kind = Literal["delivered", "retry", "permanent"]

MAX_ERROR_TEXT = 500
# Gateway answers: a proxy in front of PagerDuty may have passed the request on before it
# failed, so PagerDuty may have processed it.
GATEWAY_STATUSES = (502, 504)
USER_AGENT = "monitao-pagerduty/0.1"
BASE_HEADERS = (("User-Agent", USER_AGENT),)
JSON_HEADERS = (*BASE_HEADERS, ("Content-Type", "application/json"))


@dataclass(frozen=True)
class Outcome:
    """What one attempt achieved, without any part of the request body."""

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
        reason = _scrub(f"{exc.__class__.__name__}: {exc}", url)
        return Outcome("retry", None, _ms(started), reason[:MAX_ERROR_TEXT])
    return None


def post_event(poster: Poster | httpx.Client, url: str, body: dict[str, Any], *,
               deadline: float | None = None) -> Outcome:
    """POST `body` as JSON to `url` and classify the answer; network failures are retryable.

    Error texts never include the body (it holds the routing key) and hide URL passwords.
    """
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                         allow_nan=False).encode()  # as httpx encodes `json=`
    return _post(poster, url, content, JSON_HEADERS, deadline)


def post_raw(poster: Poster | httpx.Client, url: str, content: bytes,
             headers: dict[str, str], *, deadline: float | None = None) -> Outcome:
    """POST exact bytes (a signed body) and classify the answer like `post_event`."""
    return _post(poster, url, content, (*BASE_HEADERS, *headers.items()), deadline)


def _post(poster: Poster | httpx.Client, url: str, content: bytes,
          headers: Sequence[tuple[str, str]], deadline: float | None) -> Outcome:
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
        reason = _scrub(f"{exc.__class__.__name__}: {exc}", url)
        return Outcome("retry", None, _ms(started), reason[:MAX_ERROR_TEXT],
                       ambiguous=isinstance(exc, ANSWER_LOST))
    latency = _ms(started)
    kind = classify(status)
    data = _json_object(answer)
    if kind == "delivered":
        return Outcome(kind, status, latency, dedup_key=data.get("dedup_key"))
    message = str(data.get("message") or data.get("status") or "")
    errors = _error_list(data.get("errors"))
    error = f"HTTP {status}" + (f": {message}" if message else "")
    return Outcome(kind, status, latency, error[:MAX_ERROR_TEXT], errors,
                   ambiguous=status in GATEWAY_STATUSES)


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
    return [str(e)[:MAX_ERROR_TEXT] for e in items if e is not None]


def _scrub(text: str, url: str) -> str:
    """`text` without the URL's password, in whatever form (case, quoting) it appears."""
    password = urlsplit(url).password
    if not password:
        return text
    for form in {password, quote(password, safe=""), unquote(password)}:
        text = re.sub(re.escape(form), "***", text, flags=re.IGNORECASE)
    return text


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
