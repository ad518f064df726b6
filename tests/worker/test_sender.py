"""Posting to the Events API through httpx's MockTransport, and classifying the answer."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from worker.sender import MAX_ERROR_TEXT, Outcome, classify, post_event

KEY = "R" * 32
URL = "https://events.pagerduty.com/v2/enqueue"
DEDUP_KEY = "monitao-monitor-123-incident-456"
BODY: dict[str, Any] = {
    "routing_key": KEY,
    "event_action": "trigger",
    "dedup_key": DEDUP_KEY,
    "payload": {
        "summary": "[DOWN] example.com - HTTP 503",
        "source": "MoniTao",
        "severity": "critical",
        "custom_details": {"monitor_name": "example.com", "status_code": 503},
    },
    "client": "MoniTao",
}
INVALID_EVENT = {
    "status": "invalid event",
    "message": "Event object is invalid",
    "errors": ["'payload.summary' is missing"],
}

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records each request and answers from a script."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


@pytest.fixture
def client_for() -> Iterator[Callable[[Handler], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(handler: Handler) -> httpx.Client:
        client = httpx.Client(transport=httpx.MockTransport(handler))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def respond(status: int, payload: Any = None, content: bytes | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if content is not None:
            return httpx.Response(status, content=content)
        return httpx.Response(status, json=payload)
    return handler


def fail(exc_type: type[httpx.TransportError], message: str = "boom") -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(message, request=request)
    return handler


def assert_no_key(outcome: Outcome) -> None:
    for text in (str(outcome), repr(outcome), outcome.error, *outcome.errors,
                 str(outcome.dedup_key)):
        assert KEY not in text
        assert KEY[:8] not in text


# --- classify --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "delivered"), (202, "delivered"),
        (400, "permanent"), (401, "permanent"), (403, "permanent"), (404, "permanent"),
        (413, "permanent"),
        (408, "retry"), (429, "retry"),
        (500, "retry"), (502, "retry"), (503, "retry"), (504, "retry"),
    ],
)
def test_classify(status: int, kind: str) -> None:
    assert classify(status) == kind


# --- post_event ------------------------------------------------------------------------------


def test_accepted_with_dedup_key(client_for: Callable[[Handler], httpx.Client]) -> None:
    recorder = Recorder(respond(
        202, {"status": "success", "message": "Event processed", "dedup_key": DEDUP_KEY}
    ))
    outcome = post_event(client_for(recorder), URL, BODY)
    assert outcome.kind == "delivered"
    assert outcome.http_status == 202
    assert outcome.dedup_key == DEDUP_KEY
    assert outcome.error == ""
    assert outcome.errors == []
    assert outcome.rate_limited is False
    assert outcome.latency_ms >= 0
    assert_no_key(outcome)


def test_request_sent_is_the_body_as_json(client_for: Callable[[Handler], httpx.Client]) -> None:
    recorder = Recorder(respond(202, {"status": "success", "dedup_key": DEDUP_KEY}))
    post_event(client_for(recorder), URL, BODY)
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == BODY


def test_invalid_event_is_permanent_with_errors(
    client_for: Callable[[Handler], httpx.Client],
) -> None:
    outcome = post_event(client_for(respond(400, INVALID_EVENT)), URL, BODY)
    assert outcome.kind == "permanent"
    assert outcome.http_status == 400
    assert outcome.error == "HTTP 400: Event object is invalid"
    assert outcome.errors == ["'payload.summary' is missing"]
    assert outcome.dedup_key is None
    assert outcome.rate_limited is False
    assert_no_key(outcome)


def test_rate_limited_is_retry(client_for: Callable[[Handler], httpx.Client]) -> None:
    outcome = post_event(
        client_for(respond(429, {"status": "throttle event", "message": "Requests for this "
                                 "service are arriving too quickly."})), URL, BODY,
    )
    assert outcome.kind == "retry"
    assert outcome.http_status == 429
    assert outcome.rate_limited is True
    assert outcome.error.startswith("HTTP 429")
    assert_no_key(outcome)


@pytest.mark.parametrize(
    ("status", "content", "kind", "error"),
    [
        (503, b"<html>Service Unavailable</html>", "retry", "HTTP 503"),
        (502, b"", "retry", "HTTP 502"),
        (500, b"[1, 2]", "retry", "HTTP 500"),
        (500, b'{"status": "internal error"}', "retry", "HTTP 500: internal error"),
        (404, b"not found", "permanent", "HTTP 404"),
        (202, b"accepted", "delivered", ""),
        (400, b"\xff\xfe not utf-8", "permanent", "HTTP 400"),
    ],
)
def test_non_json_or_partial_answers(
    client_for: Callable[[Handler], httpx.Client], status: int, content: bytes, kind: str,
    error: str,
) -> None:
    outcome = post_event(client_for(respond(status, content=content)), URL, BODY)
    assert outcome.kind == kind
    assert outcome.http_status == status
    assert outcome.error == error
    assert outcome.errors == []
    assert outcome.rate_limited is False
    assert_no_key(outcome)


def test_long_error_texts_are_bounded(client_for: Callable[[Handler], httpx.Client]) -> None:
    answer = {"message": "m" * 5000, "errors": ["e" * 5000, None, "short"]}
    outcome = post_event(client_for(respond(400, answer)), URL, BODY)
    assert len(outcome.error) == MAX_ERROR_TEXT
    assert outcome.errors == ["e" * MAX_ERROR_TEXT, "short"]


@pytest.mark.parametrize(
    ("exc_type", "error_start"),
    [
        (httpx.ConnectError, "ConnectError: "),
        (httpx.ReadError, "ReadError: "),
        (httpx.RemoteProtocolError, "RemoteProtocolError: "),
        (httpx.ReadTimeout, "timeout"),
        (httpx.ConnectTimeout, "timeout"),
        (httpx.WriteTimeout, "timeout"),
        (httpx.PoolTimeout, "timeout"),
    ],
)
def test_network_failures_are_retried(
    client_for: Callable[[Handler], httpx.Client], exc_type: type[httpx.TransportError],
    error_start: str,
) -> None:
    recorder = Recorder(fail(exc_type, "connection went away"))
    outcome = post_event(client_for(recorder), URL, BODY)
    assert len(recorder.requests) == 1
    assert outcome.kind == "retry"
    assert outcome.http_status is None
    assert outcome.error.startswith(error_start)
    assert outcome.rate_limited is False
    assert_no_key(outcome)


def test_read_timeout_error_text(client_for: Callable[[Handler], httpx.Client]) -> None:
    outcome = post_event(client_for(fail(httpx.ReadTimeout)), URL, BODY)
    assert outcome.error == "timeout: ReadTimeout"


@pytest.mark.parametrize(
    "answer",
    [
        respond(202, {"status": "success", "dedup_key": DEDUP_KEY}),
        respond(400, INVALID_EVENT),
        respond(429, {"status": "throttle event"}),
        respond(503, content=b"down"),
        fail(httpx.ConnectError, "[Errno 111] Connection refused"),
        fail(httpx.ReadTimeout, "timed out"),
    ],
    ids=["202", "400", "429", "503", "connect-error", "read-timeout"],
)
def test_routing_key_never_in_outcome(
    client_for: Callable[[Handler], httpx.Client], answer: Handler
) -> None:
    recorder = Recorder(answer)
    outcome = post_event(client_for(recorder), URL, BODY)
    assert KEY in recorder.requests[0].content.decode()  # it was sent...
    assert_no_key(outcome)  # ...and is nowhere in what the attempt reports


def test_url_query_secret_hidden_in_network_error(
    client_for: Callable[[Handler], httpx.Client],
) -> None:
    url = "https://pd-proxy.internal/v2/enqueue?token=t0k%2Fsecret&region=eu"

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url} (token t0k/secret)",
                                 request=request)

    outcome = post_event(client_for(handler), url, BODY)
    assert "t0k" not in outcome.error and "region=eu" in outcome.error


@pytest.mark.parametrize(
    "url",
    [
        "http://user:secret@127.0.0.1/v2/enqueue",
        "http://user:secret@127.0.0.1:8080/v2/enqueue",
        "https://:secret@pd-proxy.internal/v2/enqueue",
    ],
)
def test_url_password_hidden_in_network_error(
    client_for: Callable[[Handler], httpx.Client], url: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {url}", request=request)

    outcome = post_event(client_for(handler), url, BODY)
    assert outcome.kind == "retry"
    assert outcome.http_status is None
    assert "secret" not in outcome.error
    assert "secret" not in str(outcome)
    assert ":***@" in outcome.error
    assert outcome.error.startswith("ConnectError: cannot connect to ")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://user:secret@127.0.0.1/v2/enqueue",
         "x" * 450 + " http://user:secret@127.0.0.1/v2/enqueue"),
        ("http://user:secret@PD-Proxy.internal/v2/enqueue",
         "cannot connect to http://user:secret@pd-proxy.internal/v2/enqueue"),
    ],
    ids=["url-cut-by-truncation", "url-as-httpx-normalises-it"],
)
def test_url_password_hidden_in_any_form(
    client_for: Callable[[Handler], httpx.Client], url: str, message: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(message, request=request)

    outcome = post_event(client_for(handler), url, BODY)
    assert outcome.kind == "retry"
    assert "secret" not in outcome.error


@pytest.mark.parametrize(
    ("status", "errors"),
    [(202, 1), (400, 5), (400, "'payload.summary' is missing")],
    ids=["202-int", "400-int", "400-string"],
)
def test_odd_errors_field_still_gives_an_outcome(
    client_for: Callable[[Handler], httpx.Client], status: int, errors: object
) -> None:
    answer = respond(status, {"status": "invalid event", "errors": errors})
    outcome = post_event(client_for(answer), URL, BODY)
    assert outcome.http_status == status
    if status != 202:
        assert outcome.errors == [str(errors)]


# --- what the endpoint echoes ----------------------------------------------------------------

REAL_KEY = "Ab3dEfGh1jKlMn0pQrStUvWxYz123456"
REAL_BODY = {**BODY, "routing_key": REAL_KEY}
OTHER_KEY = "0123456789abcdefABCDEF0123456789"


@pytest.mark.parametrize(
    "echo",
    [REAL_KEY, REAL_KEY.lower(), REAL_KEY.upper(), f"routing_key={REAL_KEY}x", OTHER_KEY],
    ids=["as-sent", "lower-case", "upper-case", "inside-a-word", "another-key-shaped-token"],
)
def test_a_routing_key_echoed_in_a_400_is_masked_at_the_source(
    client_for: Callable[[Handler], httpx.Client], echo: str
) -> None:
    answer = {"status": "invalid event", "message": f"Invalid routing key {echo}: not found",
              "errors": [f"routing_key '{echo}' is unknown", {"routing_key": echo}]}
    outcome = post_event(client_for(respond(400, answer)), URL, REAL_BODY)
    assert outcome.kind == "permanent"
    texts = [outcome.error, *outcome.errors, repr(outcome)]
    for text in texts:
        assert echo not in text and REAL_KEY.lower() not in text.lower()
    assert outcome.error.startswith("HTTP 400: Invalid routing key ")
    assert "********" in outcome.error and all("********" in e for e in outcome.errors)


def test_a_key_across_the_length_limit_shows_no_part_of_it(
    client_for: Callable[[Handler], httpx.Client],
) -> None:
    # unmasked and cut at MAX_ERROR_TEXT, the last 20 characters shown would be the key's
    message = "m " * 230 + "y" * 20 + " " + REAL_KEY + " tail"
    outcome = post_event(client_for(respond(400, {"message": message})), URL, REAL_BODY)
    assert REAL_KEY[:12] not in outcome.error and "********" in outcome.error
    many = " ".join([OTHER_KEY] * 3000) + " " + REAL_KEY
    outcome = post_event(client_for(respond(400, {"message": many, "errors": [many]})), URL,
                         REAL_BODY)
    assert len(outcome.error) <= MAX_ERROR_TEXT
    assert REAL_KEY[:6] not in outcome.error + "".join(outcome.errors)


def test_a_dedup_key_that_echoes_the_routing_key_is_masked_but_not_a_hex_one(
    client_for: Callable[[Handler], httpx.Client],
) -> None:
    hex_key = "9f1c2e3d4b5a69788796a5b4c3d2e1f0"  # what PagerDuty makes when none is sent
    outcome = post_event(client_for(respond(202, {"dedup_key": hex_key})), URL, REAL_BODY)
    assert outcome.dedup_key == hex_key
    outcome = post_event(client_for(respond(202, {"dedup_key": f"k-{REAL_KEY}"})), URL,
                         REAL_BODY)
    assert outcome.dedup_key == "k-********"
