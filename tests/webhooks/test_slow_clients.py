"""Slow clients over real sockets: connections that trickle their headers or their body, or
send nothing, are closed once the read deadline passes, and valid webhooks are answered."""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from config.settings import Settings
from tests.conftest import wait_until
from tests.webhooks.conftest import SECRET_A, counted, event_body, nothing_recorded, post
from webhooks import WebhookService, signature_header

READ_TIMEOUT = 1.0
# A slow client sends one byte this often: it would go on for ever.
TRICKLE_SECONDS = 0.05
HEAD = b"POST /webhooks/pagerduty HTTP/1.1\r\nHost: 127.0.0.1\r\n"


class SlowClient:
    """One connection that sends `opening` at once, then `trickle` a byte at a time (for
    ever: the pattern repeats); records when and how the receiver ended it."""

    def __init__(self, port: int, opening: bytes, trickle: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.opened = time.monotonic()
        self.sock.sendall(opening)
        self.trickle, self.sent = trickle, 0
        self.closed_after: float | None = None
        self.answer = b""

    def step(self) -> None:
        """Read what the receiver said (noting a close), else send one more byte."""
        if self.closed_after is not None:
            return
        try:
            if select.select([self.sock], [], [], 0)[0]:
                data = self.sock.recv(4096)
                self.answer += data
                if data:
                    return
            elif self.trickle:
                self.sock.send(self.trickle[self.sent % len(self.trickle):][:1])
                self.sent += 1
                return
            else:
                return
        except OSError:  # reset by the receiver
            pass
        self.closed_after = time.monotonic() - self.opened

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def slow_clients() -> Iterator[list[SlowClient]]:
    """Slow clients added to the list are trickled from a thread until the test ends."""
    clients: list[SlowClient] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(TRICKLE_SECONDS):
            for client in list(clients):
                client.step()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield clients
    stop.set()
    thread.join(5)
    for client in clients:
        client.close()


def head_trickle(port: int) -> SlowClient:
    """Sends its request line, then header bytes one at a time."""
    return SlowClient(port, HEAD, b"X-Slow: " + b"a" * 40 + b"\r\n")


def body_trickle(port: int) -> SlowClient:
    """Sends its whole head (a 100,000-byte body announced), then body bytes one at a time."""
    return SlowClient(port, HEAD + b"Content-Type: application/json\r\n"
                      b"Content-Length: 100000\r\n\r\n", b'{"event": "' + b"x" * 40)


def silent(port: int) -> SlowClient:
    """Connects and sends nothing."""
    return SlowClient(port, b"", b"")


@pytest.fixture
def bounded(webhook_settings: Settings) -> Iterator[WebhookService]:
    """A receiver with a 1 s read deadline and room for 6 connections."""
    with WebhookService(webhook_settings, claim_idle_seconds=60, block_seconds=0.2,
                        read_timeout=READ_TIMEOUT, limit_concurrency=6) as service:
        yield service


def signed_post(service: WebhookService, webhook_id: str) -> httpx.Response:
    body = event_body(event_id=webhook_id.upper())
    return post(service, body, signature_header([SECRET_A], body), webhook_id=webhook_id)


def test_a_valid_webhook_is_answered_while_slow_clients_trickle_and_they_are_cut_off(
        webhook_settings: Settings, slow_clients: list[SlowClient], redis_conn: redis.Redis,
        prefix: str) -> None:
    before = counted("other", "timeout"), counted("other", "unauthorized")
    with WebhookService(webhook_settings, claim_idle_seconds=60, block_seconds=0.2,
                        read_timeout=READ_TIMEOUT) as service:
        for opening in (head_trickle, body_trickle, silent):
            slow_clients.extend(opening(service.port) for _ in range(4))
        assert signed_post(service, "wh-meanwhile").status_code == 202
        assert all(client.closed_after is None for client in slow_clients)  # meanwhile
        wait_until(lambda: all(c.closed_after is not None for c in slow_clients), 10,
                   message="every slow client closed by the receiver")
    for client in slow_clients:
        assert READ_TIMEOUT * 0.9 <= client.closed_after <= READ_TIMEOUT + 4, client.answer
        assert client.answer == b""  # closed unanswered: PagerDuty would retry
    assert all(client.sent > 5 for client in slow_clients[:8])  # they were still trickling
    assert counted("other", "timeout") == before[0] + 12
    # a part of a body was never verified, so never counted as unsigned
    assert counted("other", "unauthorized") == before[1]
    assert list(redis_conn.scan_iter(match=f"{prefix}webhook-seen:*")) == [
        f"{prefix}webhook-seen:wh-meanwhile"]  # only the valid one was queued


def test_slow_clients_hold_the_concurrency_limit_only_until_the_deadline(
        bounded: WebhookService, slow_clients: list[SlowClient]) -> None:
    """Six slow connections fill the limit: requests get 503 (PagerDuty retries), and once
    the deadline closes them a valid webhook is accepted while they keep trying."""
    state = bounded._server.server_state  # uvicorn's open connections and running requests
    # uvicorn checks the limit when a head arrives: the body tricklers' heads come first
    slow_clients.extend(body_trickle(bounded.port) for _ in range(2))
    wait_until(lambda: len(state.tasks) == 2, 5, message="two bodies being read")
    slow_clients.extend([head_trickle(bounded.port), head_trickle(bounded.port),
                         silent(bounded.port), silent(bounded.port)])
    wait_until(lambda: len(state.connections) == 6, 5, message="the six connections open")
    assert signed_post(bounded, "wh-busy").status_code == 503
    started = time.monotonic()
    statuses = []

    def accepted() -> bool:
        statuses.append(signed_post(bounded, f"wh-retry-{len(statuses)}").status_code)
        return statuses[-1] == 202

    wait_until(accepted, READ_TIMEOUT + 9, interval=0.1,
               message="a valid webhook accepted once the slow clients are cut off")
    assert time.monotonic() - started >= READ_TIMEOUT * 0.5
    assert set(statuses) <= {202, 503}
    wait_until(lambda: all(c.closed_after is not None for c in slow_clients), 10,
               message="every slow client closed by the receiver")
    assert all(READ_TIMEOUT * 0.9 <= c.closed_after <= READ_TIMEOUT + 4 for c in slow_clients)


def read_answer(conn: socket.socket) -> bytes:
    """One whole HTTP answer (status line, headers, Content-Length bytes of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    while len(body) < length:
        body += conn.recv(4096)
    return head + b"\r\n\r\n" + body


def test_each_request_on_a_kept_alive_connection_has_its_own_deadline(
        bounded: WebhookService) -> None:
    """A connection open longer than the deadline is fine while each request arrives in
    time; the deadline runs from a request's first byte."""
    body = event_body(dedup_key="monitao-monitor-1-incident-none")
    request = HEAD + (f"X-PagerDuty-Signature: {signature_header([SECRET_A], body)}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", bounded.port), timeout=5) as conn:
        for _ in range(3):
            time.sleep(READ_TIMEOUT * 0.4)  # idle between requests: keep-alive's to bound
            half = len(request) // 2
            conn.sendall(request[:half])
            time.sleep(READ_TIMEOUT * 0.4)
            conn.sendall(request[half:])
            answer = read_answer(conn)
            assert answer.startswith((b"HTTP/1.1 202 ", b"HTTP/1.1 200 ")), answer
        # the same connection, a request too slow: closed
        conn.sendall(request[:10])
        started = time.monotonic()
        assert conn.recv(4096) == b""
        assert READ_TIMEOUT * 0.9 <= time.monotonic() - started <= READ_TIMEOUT + 4


def test_a_client_that_leaves_mid_body_is_not_counted_or_logged_as_unsigned(
        bounded: WebhookService, redis_conn: redis.Redis, prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    before = counted("other", "unauthorized")
    state = bounded._server.server_state  # uvicorn's open connections and running requests
    with socket.create_connection(("127.0.0.1", bounded.port), timeout=5) as conn:
        conn.sendall(HEAD + b"Content-Length: 1000\r\n\r\n" + b'{"event": ')
        wait_until(lambda: state.tasks, 5, message="the receiver reading the body")
    wait_until(lambda: not state.connections and not state.tasks, 5,
               message="the receiver done with the connection")
    assert counted("other", "unauthorized") == before
    assert "refused" not in caplog.text
    assert nothing_recorded(redis_conn, prefix)


def test_uvicorns_per_request_warnings_are_refusals(
        bounded: WebhookService, caplog: pytest.LogCaptureFixture) -> None:
    """Requests that are not HTTP: counted each, logged at the refusals' bounded rate."""
    before = counted("other", "bad_request")
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", bounded.port), timeout=5) as conn:
            conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 400 ")
    assert counted("other", "bad_request") == before + 50
    assert caplog.text.count("Invalid HTTP request") == 0
    assert caplog.text.count("not a valid HTTP request") == 1
