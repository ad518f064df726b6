"""The callback request: exact body, HMAC signature, delivery id; and post_raw."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx

from worker.callback import DELIVERY_HEADER, SIGNATURE_HEADER, callback_request, sign
from worker.sender import post_raw

CHANGE = json.dumps({"event_type": "incident.acknowledged", "agent": "Jane", "incident_id": "9"})


def test_the_body_is_the_stored_change_and_the_signature_verifies() -> None:
    body, headers = callback_request(CHANGE, "callback-P1", "s3cret")
    assert body == CHANGE.encode()
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"v1={expected}"
    assert headers[DELIVERY_HEADER] == "callback-P1"
    assert "s3cret" not in json.dumps(headers)


def test_another_secret_or_body_gives_another_signature() -> None:
    assert sign("a", b"x") != sign("b", b"x")
    assert sign("a", b"x") != sign("a", b"y")


def test_post_raw_sends_the_exact_bytes_and_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    body, headers = callback_request(CHANGE, "callback-P2", "k")
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        outcome = post_raw(client, "http://monitao.test/pd", body, headers)
    assert outcome.kind == "delivered" and outcome.http_status == 204
    [request] = seen
    assert request.content == body
    assert request.headers[SIGNATURE_HEADER] == headers[SIGNATURE_HEADER]
    assert request.headers["content-type"] == "application/json"
