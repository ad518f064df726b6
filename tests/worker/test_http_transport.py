"""The delivery HTTP transport (httpx over http.client) against real loopback servers."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from worker.http_transport import ThreadConnectionsTransport


class Server:
    """A loopback HTTP/1.1 server that counts connections and can misbehave on request."""

    def __init__(self) -> None:
        self.connections = 0
        self.lock = threading.Lock()
        self.delay = 0.0
        self.close_after_answer = False
        self.seen: list[tuple[str, dict[str, str]]] = []  # (path, headers) of each request
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                with outer.lock:
                    outer.connections += 1
                super().setup()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.seen.append((self.path, dict(self.headers.items())))
                time.sleep(outer.delay)  # the server's latency, not a test synchronisation
                self.send_response(202)
                self.send_header("Content-Length", str(len(body)))
                if outer.close_after_answer:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                if outer.close_after_answer:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # a client that gave up (a read timeout) breaks the pipe of the answer: routine
        self.httpd.handle_error = lambda *args: None  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v2/enqueue"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


def client(read_timeout: float = 5.0, **kwargs: object) -> httpx.Client:
    """A client built like `FleetContext.http()`: the same timeouts on client and transport."""
    return httpx.Client(
        timeout=httpx.Timeout(read_timeout, connect=2.0),
        transport=ThreadConnectionsTransport(connect_timeout=2.0, read_timeout=read_timeout,
                                             **kwargs))


def test_post_sends_what_httpx_would_on_the_same_connection(server: Server) -> None:
    port = server.httpd.server_address[1]
    url = f"http://us%40er:p%3Ass@127.0.0.1:{port}/v2/enqueue?x=1"
    transport = ThreadConnectionsTransport(connect_timeout=2.0, read_timeout=5.0)
    with httpx.Client(transport=transport) as http:
        status, body = transport.post(url, b'{"n":1}', [("Content-Type", "application/json")])
        http.post(url, content=b'{"n":1}', headers={"Content-Type": "application/json"})

    assert (status, body) == (202, b'{"n":1}')
    (fast_path, fast), (httpx_path, by_httpx) = server.seen
    assert fast_path == httpx_path == "/v2/enqueue?x=1"
    for name in ("Host", "Content-Length", "Content-Type", "Authorization"):
        assert fast[name] == by_httpx[name], name
    assert server.connections == 1  # the same kept-alive connection of this thread


def test_post_raises_httpx_errors(server: Server) -> None:
    transport = ThreadConnectionsTransport(connect_timeout=2.0, read_timeout=0.2)
    server.delay = 1.0
    with pytest.raises(httpx.ReadTimeout):
        transport.post(server.url, b"{}", [])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        transport.post(f"http://127.0.0.1:{free}/v2/enqueue", b"{}", [])
    with pytest.raises(httpx.UnsupportedProtocol):
        transport.post("ftp://127.0.0.1/x", b"{}", [])
    transport.close()


def test_one_kept_alive_connection_carries_a_threads_requests(server: Server) -> None:
    with client() as http:
        answers = [http.post(server.url, json={"n": n}) for n in range(20)]
    assert [a.json() for a in answers] == [{"n": n} for n in range(20)]
    assert {a.status_code for a in answers} == {202}
    assert server.connections == 1


def test_each_thread_has_its_own_connection(server: Server) -> None:
    statuses: list[int] = []

    def post_five(http: httpx.Client) -> None:
        statuses.extend(http.post(server.url, json={}).status_code for _ in range(5))

    with client() as http:
        threads = [threading.Thread(target=post_five, args=(http,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert statuses == [202] * 20
    assert server.connections == 4


def test_a_connection_the_server_closed_is_replaced_without_an_error(server: Server) -> None:
    server.close_after_answer = True
    with client() as http:
        assert [http.post(server.url, json={}).status_code for _ in range(3)] == [202] * 3
    assert server.connections == 3


def test_a_slow_answer_is_a_read_timeout(server: Server) -> None:
    server.delay = 1.0
    with client(read_timeout=0.2) as http:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            http.post(server.url, json={})
        assert time.monotonic() - started < 0.9
        server.delay = 0.0
        assert http.post(server.url, json={}).status_code == 202  # a fresh connection


def test_nobody_listening_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with client() as http, pytest.raises(httpx.ConnectError):
        http.post(f"http://127.0.0.1:{port}/v2/enqueue", json={})


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a cert")
def test_https_verifies_the_certificate(tmp_path: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", "key.pem", "-out", "cert.pem"],
        cwd=tmp_path, check=True, capture_output=True, timeout=60)
    server = Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    url = server.url.replace("http://", "https://")
    try:
        with client() as http, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY"):
            http.post(url, json={})  # self-signed: not trusted by default
        trusted = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        with client(ssl_context=trusted) as http:
            assert http.post(url, json={"ok": 1}).json() == {"ok": 1}
    finally:
        server.close()


def test_post_names_hosts_and_credentials_as_httpx_does() -> None:
    from worker.http_transport import _target

    assert _target("http://münchen.test:8080/v2/enqueue").headers == (
        ("Host", "xn--mnchen-3ya.test:8080"),)
    assert _target("https://[::1]/v2/enqueue").headers == (("Host", "[::1]"),)
    assert _target("https://:@h.test/v2/enqueue").headers == (("Host", "h.test"),)


# --- one deadline for the whole attempt (issue 16) -------------------------------------------

def test_nothing_is_written_once_the_deadline_has_passed(server: Server) -> None:
    from worker.sender import DeadlinePassed

    transport = ThreadConnectionsTransport(connect_timeout=2.0, read_timeout=5.0)
    transport.open(server.url)  # the connection is there; only the deadline stops the request
    with pytest.raises(DeadlinePassed):
        transport.post(server.url, b"{}", [], deadline=time.monotonic() - 0.001)
    assert transport.post(server.url, b"{}", [], deadline=time.monotonic() + 5)[0] == 202
    assert len(server.seen) == 1  # only the second request reached the server
    transport.close()


def test_a_trickled_answer_is_cut_at_the_deadline() -> None:
    # one byte every 0.2 s never trips a 1 s read timeout, which bounds each read alone
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 50\r\n\r\n")
            while not stop.wait(0.2):
                try:
                    connection.sendall(b"x")
                except OSError:
                    return

    threading.Thread(target=trickle, daemon=True).start()
    transport = ThreadConnectionsTransport(connect_timeout=1.0, read_timeout=1.0)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v2/enqueue"
    started = time.monotonic()
    try:
        with pytest.raises(httpx.ReadTimeout):
            transport.post(url, b"{}", [], deadline=started + 1.5)
        assert time.monotonic() - started < 3.0  # 50 bytes at 5 a second would take 10 s
    finally:
        stop.set()
        listener.close()
        transport.close()


def test_a_stalled_name_lookup_is_given_up_at_the_connect_timeout(server: Server) -> None:
    release = threading.Event()

    def stalled(host: str, port: int, *args: object) -> list[tuple[object, ...]]:
        if host == "stalled.test":
            release.wait(10)
        return socket.getaddrinfo("127.0.0.1", port, *args)  # type: ignore[arg-type]

    transport = ThreadConnectionsTransport(connect_timeout=0.3, read_timeout=5.0,
                                           resolve=stalled)
    port = server.httpd.server_address[1]
    started = time.monotonic()
    try:
        with pytest.raises(httpx.ConnectTimeout, match=r"looking up stalled\.test"):
            transport.post(f"http://stalled.test:{port}/v2/enqueue", b"{}", [])
        assert time.monotonic() - started < 2.0
        assert server.seen == []
        # another host is looked up while the stalled lookup still hangs
        assert transport.post(f"http://other.test:{port}/v2/enqueue", b"{}", [])[0] == 202
    finally:
        release.set()
        transport.close()


def test_errors_say_whether_the_request_went_out(server: Server) -> None:
    from worker.sender import ANSWER_LOST

    server.delay = 1.0
    transport = ThreadConnectionsTransport(connect_timeout=2.0, read_timeout=0.2)
    with pytest.raises(httpx.ReadTimeout) as lost:  # it went out: PagerDuty may have it
        transport.post(server.url, b"{}", [])
    assert isinstance(lost.value, ANSWER_LOST)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    with pytest.raises(httpx.ConnectError) as refused:  # it never went out
        transport.post(f"http://127.0.0.1:{free}/v2/enqueue", b"{}", [])
    assert not isinstance(refused.value, ANSWER_LOST)
    transport.close()
