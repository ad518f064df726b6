"""The receiver over real HTTP: signatures, de-duplication, limits, and what gets recorded."""

from __future__ import annotations

import collections
import json
import logging
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from config.keyspace import Keyspace
from tests.conftest import wait_until
from tests.webhooks.conftest import (
    DEDUP,
    SECRET_A,
    SECRET_B,
    counted,
    entries,
    event_body,
    nothing_recorded,
    post,
)
from webhooks import WebhookService, sign, signature_header


def test_a_signed_acknowledgement_is_queued_then_recorded(
        receiver: WebhookService, redis_conn: redis.Redis, keys: Keyspace, incident: str,
) -> None:
    before = counted("incident.acknowledged", "matched")
    body = event_body()
    answer = post(receiver, body, f"v1={sign(SECRET_A, body)}")
    assert answer.status_code == 202, answer.text
    [entry] = wait_until(lambda: entries(redis_conn, keys), 10, message="the timeline entry")
    assert entry["stage"] == "pagerduty_acknowledged"
    assert (entry["agent"], entry["pd_incident"], entry["pd_status"], entry["event_type"],
            entry["pd_event_id"], entry["destination"], entry["dedup_key"]) == (
        "Jane Responder", "PINC1", "acknowledged", "incident.acknowledged", "01EVENT",
        "prod", DEDUP)
    assert entry["occurred_at"] == "2026-11-27T10:15:00.000Z"
    wait_until(lambda: counted("incident.acknowledged", "matched") == before + 1, 10,
               message="the matched event to be counted")
    wait_until(lambda: redis_conn.xlen(keys.webhook_inbox) == 0, 5, message="inbox emptied")
    assert redis_conn.xpending(keys.webhook_inbox, "receivers")["pending"] == 0


@pytest.mark.parametrize("secret", [SECRET_A, SECRET_B])
def test_either_rotated_secret_signs(receiver: WebhookService, secret: str) -> None:
    body = event_body()
    assert post(receiver, body, f"v1={sign(secret, body)}").status_code == 202


def test_several_signatures_one_valid(receiver: WebhookService) -> None:
    body = event_body()
    header = f"v1={sign('retired-secret', body)},v1={sign(SECRET_B, body)}"
    assert post(receiver, body, header).status_code == 202


@pytest.mark.parametrize("signature", [
    None, "", "v1=", "v1=00", "garbage", "v0=" + "0" * 64,
    "v1=" + sign("not-the-secret", b"x"),
    "v1=" + sign(SECRET_A, b"another body"),
])
def test_missing_or_wrong_signature_is_refused_and_nothing_recorded(
        receiver: WebhookService, redis_conn: redis.Redis, prefix: str,
        signature: str | None) -> None:
    before = counted("other", "unauthorized")
    answer = post(receiver, event_body(), signature)
    assert answer.status_code == 401
    assert nothing_recorded(redis_conn, prefix)
    assert counted("other", "unauthorized") == before + 1


def test_a_duplicate_webhook_id_is_processed_once(
        receiver: WebhookService, redis_conn: redis.Redis, keys: Keyspace, incident: str,
) -> None:
    body = event_body()
    header = signature_header([SECRET_A], body)
    assert post(receiver, body, header, webhook_id="wh-dup").status_code == 202
    again = post(receiver, body, header, webhook_id="wh-dup")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    # a third, different delivery proves the processor has moved past the duplicate
    other = event_body(event_id="02EVENT", event_type="incident.resolved")
    assert post(receiver, other, signature_header([SECRET_A], other),
                webhook_id="wh-next").status_code == 202
    seen = wait_until(lambda: (e := entries(redis_conn, keys)) and len(e) >= 2 and e, 10)
    assert [e["pd_event_id"] for e in seen] == ["01EVENT", "02EVENT"]
    ttl = redis_conn.ttl(keys.webhook_seen("wh-dup"))
    assert 47 * 3600 < ttl <= 48 * 3600


def test_a_replayed_body_under_another_webhook_id_is_a_duplicate_by_its_event_id(
        receiver: WebhookService, redis_conn: redis.Redis, keys: Keyspace, incident: str,
) -> None:
    """X-Webhook-Id is not signed: whoever captured a delivery can send its signed body
    again under a new id. The signed event.id catches it."""
    before = counted("incident.acknowledged", "duplicate")
    body = event_body()
    header = signature_header([SECRET_A], body)
    assert post(receiver, body, header, webhook_id="wh-original").status_code == 202
    for replay_id in ("wh-replay-1", "wh-replay-2", None):
        again = post(receiver, body, header, webhook_id=replay_id)
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "duplicate" and again.json()["seen"] == "event.id"
    other = event_body(event_id="02EVENT", event_type="incident.resolved")
    assert post(receiver, other, signature_header([SECRET_A], other),
                webhook_id="wh-next").status_code == 202
    seen = wait_until(lambda: (e := entries(redis_conn, keys)) and len(e) >= 2 and e, 10)
    assert [e["pd_event_id"] for e in seen] == ["01EVENT", "02EVENT"]
    assert counted("incident.acknowledged", "duplicate") == before + 3
    ttl = redis_conn.ttl(keys.webhook_event_seen("01EVENT"))
    assert 47 * 3600 < ttl <= 48 * 3600


@pytest.mark.parametrize("event_id", ["x" * 10_000, "E\ud800", "E\n*?[]", "sha256:abc"])
def test_any_event_id_is_deduplicated(receiver: WebhookService, redis_conn: redis.Redis,
                                      keys: Keyspace, event_id: str) -> None:
    """Long ids, lone surrogates, control and glob characters: hashed in the key name."""
    body = json.dumps({"event": {"id": event_id, "event_type": "incident.acknowledged",
                                 "data": {"incident_key": DEDUP}}}).encode()
    header = signature_header([SECRET_A], body)
    assert post(receiver, body, header, webhook_id="wh-a").status_code == 202
    again = post(receiver, body, header, webhook_id="wh-b")
    assert again.status_code == 200 and again.json()["seen"] == "event.id"
    names = list(redis_conn.scan_iter(match=f"{keys.prefix}webhook-event-seen:*"))
    assert len(names) == 1 and len(names[0]) < len(keys.prefix) + 100


def test_without_a_webhook_id_the_body_is_the_identity(
        receiver: WebhookService, redis_conn: redis.Redis, keys: Keyspace) -> None:
    body = event_body(dedup_key="monitao-monitor-1-incident-none")
    header = signature_header([SECRET_A], body)
    assert post(receiver, body, header, webhook_id=None).status_code == 202
    assert post(receiver, body, header, webhook_id=None).status_code == 200


def test_oversized_bodies_are_refused(receiver: WebhookService, redis_conn: redis.Redis,
                                      prefix: str) -> None:
    big = b'{"event": {"pad": "' + b"x" * (256 * 1024) + b'"}}'
    assert len(big) > 256 * 1024
    assert post(receiver, big, signature_header([SECRET_A], big)).status_code == 413
    # 256 KB + 1 exactly, streamed without a Content-Length (chunked): counted as it comes
    exact = b"x" * (256 * 1024 + 1)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(exact), 64 * 1024):
            yield exact[start:start + 64 * 1024]

    answer = httpx.post(receiver.url, content=chunks(), timeout=10,
                        headers={"X-PagerDuty-Signature": signature_header([SECRET_A], exact)})
    assert answer.status_code == 413
    # a Content-Length claiming more than the limit is refused before the body is read
    # (over a raw socket: HTTP clients will not send a body shorter than they declare)
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as conn:
        conn.sendall(b"POST /webhooks/pagerduty HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 262145\r\n\r\n{}")
        assert conn.recv(1024).startswith(b"HTTP/1.1 413 ")
    assert nothing_recorded(redis_conn, prefix)


def test_exactly_the_limit_is_accepted(receiver: WebhookService) -> None:
    body = b'{"pad": "' + b"x" * (256 * 1024 - 11) + b'"}'
    assert len(body) == 256 * 1024
    assert post(receiver, body, signature_header([SECRET_A], body)).status_code == 202


def test_malformed_json_is_400(receiver: WebhookService, redis_conn: redis.Redis,
                               prefix: str) -> None:
    for body in (b'{"event": ', b"\xff\xfe garbage", b"[" * 100_000):
        assert post(receiver, body, signature_header([SECRET_A], body)).status_code == 400
    assert nothing_recorded(redis_conn, prefix)


def test_json_that_is_no_event_is_recorded_invalid(
        receiver: WebhookService, redis_conn: redis.Redis, keys: Keyspace) -> None:
    before = counted("other", "invalid")
    body = b'{"hello": "world"}'
    assert post(receiver, body, signature_header([SECRET_A], body)).status_code == 202
    [(_, fields)] = wait_until(lambda: redis_conn.xrange(keys.webhook_unmatched), 10)
    assert fields["result"] == "invalid" and fields["body"] == body.decode()
    # the processor counts right after recording: poll, the two are not one step
    wait_until(lambda: counted("other", "invalid") == before + 1, 10,
               message="the invalid event to be counted")


def test_an_unknown_incident_is_counted_and_kept_as_unmatched(
        receiver: WebhookService, redis_conn: redis.Redis, keys: Keyspace) -> None:
    before = counted("incident.resolved", "unmatched")
    body = event_body(event_type="incident.resolved",
                      dedup_key="monitao-monitor-9-incident-nobody")
    assert post(receiver, body, signature_header([SECRET_A], body)).status_code == 202
    [(_, fields)] = wait_until(lambda: redis_conn.xrange(keys.webhook_unmatched), 10)
    assert fields["result"] == "unmatched"
    assert fields["dedup_key"] == "monitao-monitor-9-incident-nobody"
    assert fields["event_type"] == "incident.resolved" and fields["webhook_id"] == "wh-1"
    wait_until(lambda: counted("incident.resolved", "unmatched") == before + 1, 10,
               message="the unmatched event to be counted")
    assert not redis_conn.exists(keys.timeline("nobody"))


def test_a_note_without_incident_key_matches_through_its_pagerduty_incident(
        receiver: WebhookService, redis_conn: redis.Redis, keys: Keyspace, incident: str,
) -> None:
    ack = event_body()
    assert post(receiver, ack, signature_header([SECRET_A], ack), "w1").status_code == 202
    wait_until(lambda: entries(redis_conn, keys), 10)
    note = json.dumps({"event": {
        "id": "03NOTE", "event_type": "incident.annotated", "resource_type": "incident",
        "occurred_at": "2026-11-27T10:16:00Z", "agent": {"summary": "Sam"},
        "data": {"id": "PNOTE", "type": "incident_note", "content": "looking",
                 "incident": {"id": "PINC1", "type": "incident_reference"}}}}).encode()
    assert post(receiver, note, signature_header([SECRET_A], note), "w2").status_code == 202
    recorded = wait_until(lambda: (e := entries(redis_conn, keys)) and len(e) == 2 and e, 10)
    assert (recorded[1]["stage"], recorded[1]["agent"]) == ("pagerduty_annotated", "Sam")


def test_an_abandoned_entry_is_taken_over(
        webhook_settings, redis_conn: redis.Redis, keys: Keyspace, incident: str) -> None:
    from webhooks.processor import GROUP, Processor

    dead = Processor(redis_conn, webhook_settings, consumer="dead")
    dead.ensure_group()
    body = event_body()
    redis_conn.xadd(keys.webhook_inbox, {"body": body.decode(), "webhook_id": "w"})
    # the first processor reads it and dies before acknowledging
    assert redis_conn.xreadgroup(GROUP, "dead", {keys.webhook_inbox: ">"}, count=10)
    assert not entries(redis_conn, keys)
    heir = Processor(redis_conn, webhook_settings, consumer="heir", claim_idle_seconds=0.05,
                     block_seconds=0.05)
    wait_until(lambda: heir.step() or entries(redis_conn, keys), 5)
    assert [e["stage"] for e in entries(redis_conn, keys)] == ["pagerduty_acknowledged"]
    assert redis_conn.xpending(keys.webhook_inbox, GROUP)["pending"] == 0


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "webhooks.receiver" and "webhooks: refused" in r.getMessage()]


def told(messages: list[str]) -> int:
    """How many refusals the log lines account for: one per single line, N per summary."""
    total = 0
    for message in messages:
        summed = re.match(r"webhooks: refused ([\d,]+) more request", message)
        total += int(summed.group(1).replace(",", "")) if summed else 1
    return total


def flood(service: WebhookService, requests: int, body: bytes, batch: int = 250,
          **headers: str) -> collections.Counter[int]:
    """POST `body` `requests` times, pipelined on one keep-alive connection (an HTTP client
    library takes tens of ms a request here); the answers' status codes."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    one = (f"POST /webhooks/pagerduty HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    statuses: collections.Counter[int] = collections.Counter()
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as conn:
        for start in range(0, requests, batch):
            count = min(batch, requests - start)
            conn.sendall(one * count)
            answers = b""
            while answers.count(b"HTTP/1.1 ") < count:
                chunk = conn.recv(65536)
                assert chunk, "the receiver closed the connection"
                answers += chunk
            statuses.update(int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answers))
    return statuses


def test_thousands_of_refused_requests_give_a_bounded_number_of_log_lines(
        webhook_settings, redis_conn: redis.Redis, prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    before = {result: counted("other", result) for result in ("unauthorized", "not_json")}
    with WebhookService(webhook_settings, claim_idle_seconds=60,
                        block_seconds=0.2) as service:
        unsigned = flood(service, 3000, event_body())
        garbage = b"{not json"
        malformed = flood(service, 400, garbage, **{
            "X-PagerDuty-Signature": signature_header([SECRET_A], garbage)})
        assert unsigned == {401: 3000} and malformed == {400: 400}
        assert len(refusal_lines(caplog)) == 1  # the first; the rest are held for the summary
    lines = refusal_lines(caplog)  # stopping the service logs the summary
    assert len(lines) == 2
    assert told(lines) == 3400
    assert "3,000 missing or wrong signature" in lines[1] or \
        "2,999 missing or wrong signature" in lines[1]
    assert "body is not JSON" in lines[1] and "from 127.0.0.1 (3,399)" in lines[1]
    assert counted("other", "unauthorized") == before["unauthorized"] + 3000
    assert counted("other", "not_json") == before["not_json"] + 400
    assert nothing_recorded(redis_conn, prefix)


def test_a_summary_is_logged_when_its_interval_ends(
        webhook_settings, caplog: pytest.LogCaptureFixture) -> None:
    """Refusals spread over several intervals: at most two lines each, the last interval's
    summary logged at its end with no further request, and every refusal told."""
    caplog.set_level(logging.WARNING)
    with WebhookService(webhook_settings, claim_idle_seconds=60, block_seconds=0.2,
                        refusal_log_seconds=0.5) as service:
        started, sent = time.monotonic(), 0
        while time.monotonic() - started < 2.0:
            assert flood(service, 10, b"{}") == {401: 10}
            sent += 10
        elapsed = time.monotonic() - started
        wait_until(lambda: told(refusal_lines(caplog)) == sent, 10,
                   message="the last interval's summary")
        lines = refusal_lines(caplog)
    assert sent >= 100
    assert len(lines) <= 2 * (elapsed / 0.5 + 2)


def test_the_secret_is_nowhere(receiver: WebhookService, redis_conn: redis.Redis,
                               prefix: str, keys: Keyspace, incident: str,
                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = event_body()
    assert post(receiver, body, signature_header([SECRET_A], body), "a").status_code == 202
    assert post(receiver, body, "v1=" + sign("wrong", body), "b").status_code == 401
    wait_until(lambda: entries(redis_conn, keys), 10)
    assert SECRET_A not in repr(receiver.settings) and SECRET_A not in str(receiver.settings)
    values = []
    for key in redis_conn.scan_iter(match=f"{prefix}*"):
        kind = redis_conn.type(key)
        if kind == "string":
            values.append(redis_conn.get(key))
        elif kind == "stream":
            values.append(repr(redis_conn.xrange(key)))
        elif kind == "hash":
            values.append(repr(redis_conn.hgetall(key)))
        values.append(key)
    dump = "\n".join(values) + "\n" + caplog.text
    for secret in (SECRET_A, SECRET_B):
        assert secret not in dump
