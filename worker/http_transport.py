"""An httpx transport over the standard library's http.client: one connection per thread.

httpx's default transport (httpcore) keeps one pool per client; with many threads it scans
every pooled connection, and polls each idle socket, on every request. Under the threads
pool, each worker thread posts one request at a time, so a kept-alive connection per
thread and origin is all the pooling delivery needs. Delivery posts through `post()`,
without building httpx's request and response objects; `FleetContext.http()` also mounts
this transport on an `httpx.Client` for anything that wants one.

Errors are raised as httpx's: `ConnectTimeout`/`ConnectError` before the request went
out, `ReadTimeout` while waiting for the answer, `RemoteProtocolError` when the peer
closed or answered garbage. A failed connection is dropped; a kept-alive connection the
server closed while idle is noticed before use (the socket reads as ended) and replaced.
"""

from __future__ import annotations

import base64
import functools
import http.client
import select
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import httpx

# (scheme, host, port): the connections of a thread are kept per origin.
Origin = tuple[str, str, int | None]


class ThreadConnectionsTransport(httpx.BaseTransport):
    """Sends each request on this thread's kept-alive connection to the request's origin."""

    def __init__(self, *, connect_timeout: float, read_timeout: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._ssl_context = ssl_context
        self._local = threading.local()
        self._all: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        timeouts = request.extensions.get("timeout", {})
        headers = [(name.decode("latin-1"), value.decode("latin-1"))
                   for name, value in request.headers.raw]
        status, response_headers, content = self._exchange(
            (url.scheme, url.host, url.port), request.method, url.raw_path.decode("ascii"),
            headers, request.read(), timeouts.get("connect", self.connect_timeout),
            timeouts.get("read", self.read_timeout), request=request)
        return httpx.Response(status, headers=response_headers, content=content,
                              request=request)

    def post(self, url: str, content: bytes,
             headers: Sequence[tuple[str, str]]) -> tuple[int, bytes]:
        """POST `content` to `url` on this thread's connection; return (status, body).

        The delivery hot path, without building httpx's request and response objects:
        Host, Content-Length and the URL's credentials (as Basic auth, as httpx sends
        them) are added here. Raises httpx's errors, like `handle_request`.
        """
        target = _target(url)
        status, _, body = self._exchange(
            target.origin, "POST", target.path,
            [*target.headers, ("Content-Length", str(len(content))), *headers], content,
            self.connect_timeout, self.read_timeout)
        return status, body

    def _exchange(self, origin: Origin, method: str, path: str,
                  headers: Sequence[tuple[str, str]], content: bytes,
                  connect_timeout: float | None, read_timeout: float | None, *,
                  request: httpx.Request | None = None,
                  ) -> tuple[int, list[tuple[str, str]], bytes]:
        connections: dict[Origin, http.client.HTTPConnection] = (
            self._local.__dict__.setdefault("connections", {})
        )
        connection = connections.get(origin)
        if connection is not None and _closed_by_peer(connection):
            self._drop(connections, origin)
            connection = None
        if connection is None:
            connection = self._connect(origin, connect_timeout)
            connections[origin] = connection
            with self._lock:
                self._all.add(connection)
        try:
            assert connection.sock is not None
            connection.sock.settimeout(read_timeout)
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders(content)
            response = connection.getresponse()
            body = response.read()
        except TimeoutError as exc:
            self._drop(connections, origin)
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop(connections, origin)
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}",
                                            request=request) from exc
        if response.will_close:
            self._drop(connections, origin)
        return response.status, response.getheaders(), body

    def _connect(self, origin: Origin, timeout: float | None) -> http.client.HTTPConnection:
        scheme, host, port = origin
        connection: http.client.HTTPConnection
        if scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
            connection = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                     context=context)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.connect()
            assert connection.sock is not None
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError as exc:
            connection.close()
            raise httpx.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            connection.close()
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return connection

    def _drop(self, connections: dict[Origin, http.client.HTTPConnection],
              origin: Origin) -> None:
        connection = connections.pop(origin, None)
        if connection is not None:
            connection.close()
            with self._lock:
                self._all.discard(connection)

    def close(self) -> None:
        """Close every connection of every thread."""
        with self._lock:
            connections, self._all = self._all, set()
        for connection in connections:
            connection.close()


@dataclass(frozen=True)
class _Target:
    origin: Origin
    path: str
    headers: tuple[tuple[str, str], ...]  # Host, and Authorization from URL credentials


@functools.lru_cache(maxsize=256)
def _target(url: str) -> _Target:
    """Where a request to `url` goes, parsed once per URL (a destination's is fixed)."""
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise httpx.UnsupportedProtocol(f"cannot post to a {parsed.scheme or 'relative'} URL")
    default_port = {"http": 80, "https": 443}[parsed.scheme]
    raw_host = parsed.raw_host.decode("ascii")  # an internationalised name IDNA-encoded
    host = f"[{raw_host}]" if ":" in raw_host else raw_host
    host_header = host if parsed.port in (None, default_port) else f"{host}:{parsed.port}"
    headers = [("Host", host_header)]
    if parsed.username or parsed.password:
        # the credentials of the URL, sent as httpx sends them (Basic auth)
        username, _, password = parsed.userinfo.partition(b":")
        token = base64.b64encode(unquote_to_bytes(username) + b":" + unquote_to_bytes(password))
        headers.append(("Authorization", "Basic " + token.decode("ascii")))
    return _Target((parsed.scheme, raw_host, parsed.port), parsed.raw_path.decode("ascii"),
                   tuple(headers))


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive socket that reads as ready has been closed (or broken) by the peer."""
    if connection.sock is None:
        return True
    poller = select.poll()
    try:
        poller.register(connection.sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
