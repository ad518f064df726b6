"""An httpx transport over the standard library's http.client: one connection per thread.

httpx's default transport (httpcore) keeps one pool per client; with many threads it scans
every pooled connection, and polls each idle socket, on every request. Under the threads
pool, each worker thread posts one request at a time, so a kept-alive connection per
thread and origin is all the pooling delivery needs. `FleetContext.http()` mounts this
transport on the process's `httpx.Client`, so the sender, its classification of errors
and the tests' `MockTransport` seam are unchanged.

Errors are raised as httpx's: `ConnectTimeout`/`ConnectError` before the request went
out, `ReadTimeout` while waiting for the answer, `RemoteProtocolError` when the peer
closed or answered garbage. A failed connection is dropped; a kept-alive connection the
server closed while idle is noticed before use (the socket reads as ended) and replaced.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading

import httpx


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
        origin = (url.scheme, url.host, url.port)
        timeouts = request.extensions.get("timeout", {})
        connect_timeout = timeouts.get("connect", self.connect_timeout)
        read_timeout = timeouts.get("read", self.read_timeout)
        connections: dict[tuple[str, str, int | None], http.client.HTTPConnection] = (
            self._local.__dict__.setdefault("connections", {})
        )
        connection = connections.get(origin)
        if connection is not None and _closed_by_peer(connection):
            self._drop(connections, origin)
            connection = None
        if connection is None:
            connection = self._connect(url, connect_timeout)
            connections[origin] = connection
            with self._lock:
                self._all.add(connection)
        try:
            assert connection.sock is not None
            connection.sock.settimeout(read_timeout)
            target = url.raw_path.decode("ascii")
            connection.putrequest(request.method, target, skip_host=True,
                                  skip_accept_encoding=True)
            for name, value in request.headers.raw:
                connection.putheader(name.decode("latin-1"), value.decode("latin-1"))
            connection.endheaders(request.read())
            response = connection.getresponse()
            content = response.read()
        except TimeoutError as exc:
            self._drop(connections, origin)
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop(connections, origin)
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}",
                                            request=request) from exc
        if response.will_close:
            self._drop(connections, origin)
        return httpx.Response(response.status, headers=response.getheaders(),
                              content=content, request=request)

    def _connect(self, url: httpx.URL, timeout: float | None) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if url.scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
            connection = http.client.HTTPSConnection(url.host, url.port, timeout=timeout,
                                                     context=context)
        else:
            connection = http.client.HTTPConnection(url.host, url.port, timeout=timeout)
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

    def _drop(self, connections: dict[tuple[str, str, int | None], http.client.HTTPConnection],
              origin: tuple[str, str, int | None]) -> None:
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
