"""An httpx transport over the standard library's http.client: one connection per thread.

httpx's default transport (httpcore) keeps one pool per client; with many threads it scans
every pooled connection, and polls each idle socket, on every request. Under the threads
pool, each worker thread posts one request at a time, so a kept-alive connection per
thread and origin is all the pooling delivery needs. Delivery posts through `post()`,
without building httpx's request and response objects; `FleetContext.http()` also mounts
this transport on an `httpx.Client` for anything that wants one.

One deadline bounds a whole attempt (worker/delivery.py gives it, shorter than the slot's
lease): the DNS lookup (in a small thread pool, since `getaddrinfo` takes no timeout), the
connection to each address, the TLS handshake, writing the request and reading the answer
all count against it, and a watchdog shuts the socket down when it passes mid-read, so a
server that trickles bytes cannot stretch an attempt. `open()` makes the connection ahead
of the request (delivery opens it before asking the gate); `post()` checks the deadline
right before the request is written and raises `DeadlinePassed` instead of sending late.

Errors are raised as httpx's, split by whether the request went out: `ConnectTimeout`/
`ConnectError`/`WriteTimeout`/`WriteError` while it had not been written whole (PagerDuty
cannot have processed it), `ReadTimeout`/`ReadError`/`RemoteProtocolError` once it was (it
may have been processed, the answer was lost). A failed connection is dropped; a kept-alive
connection the server closed while idle is noticed before use and replaced.
"""

from __future__ import annotations

import base64
import functools
import heapq
import http.client
import ipaddress
import itertools
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import httpx

from worker.sender import DeadlinePassed

# (scheme, host, port): the connections of a thread are kept per origin.
Origin = tuple[str, str, int | None]
# socket.getaddrinfo's shape: (host, port, family, type) -> [(family, type, proto, name, addr)]
Resolver = Callable[..., list[tuple[Any, ...]]]
# Lookups that may be in progress at once per process; a stalled resolver holds one each.
DNS_THREADS = 4


class ThreadConnectionsTransport(httpx.BaseTransport):
    """Sends each request on this thread's kept-alive connection to the request's origin.

    `resolve` looks host names up (`socket.getaddrinfo` by default, looked up when used).
    """

    def __init__(self, *, connect_timeout: float, read_timeout: float,
                 ssl_context: ssl.SSLContext | None = None,
                 resolve: Resolver | None = None) -> None:
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._ssl_context = ssl_context
        self._resolve = resolve or (lambda *args: socket.getaddrinfo(*args))
        self._local = threading.local()
        self._all: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        self._lookups: tuple[int, ThreadPoolExecutor] | None = None
        self._watchdog = _Watchdog()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        timeouts = request.extensions.get("timeout", {})
        connect = timeouts.get("connect", self.connect_timeout) or self.connect_timeout
        read = timeouts.get("read", self.read_timeout) or self.read_timeout
        headers = [(name.decode("latin-1"), value.decode("latin-1"))
                   for name, value in request.headers.raw]
        status, response_headers, content = self._exchange(
            (url.scheme, url.host, url.port), request.method, url.raw_path.decode("ascii"),
            headers, request.read(), time.monotonic() + connect + read,
            connect_timeout=connect, read_timeout=read, request=request)
        return httpx.Response(status, headers=response_headers, content=content,
                              request=request)

    def open(self, url: str, *, deadline: float | None = None) -> None:
        """Make sure this thread has a connection to `url`'s origin: look the host up,
        connect and shake hands now, within the connect timeout (and `deadline`, a
        `time.monotonic()` reading). Raises httpx's `ConnectTimeout`/`ConnectError`."""
        origin = _target(url).origin
        connections = self._connections()
        connection = connections.get(origin)
        if connection is not None and not _closed_by_peer(connection):
            return
        self._drop(connections, origin)
        limit = time.monotonic() + self.connect_timeout
        self._open(connections, origin, limit if deadline is None else min(limit, deadline))

    def post(self, url: str, content: bytes, headers: Sequence[tuple[str, str]], *,
             deadline: float | None = None) -> tuple[int, bytes]:
        """POST `content` to `url` on this thread's connection; return (status, body).

        The delivery hot path, without building httpx's request and response objects:
        Host, Content-Length and the URL's credentials (as Basic auth, as httpx sends
        them) are added here. The whole exchange ends by `deadline` (by default the
        connect plus the read timeout from now); if it has passed before the request is
        written, `DeadlinePassed` is raised and nothing is sent. Raises httpx's errors,
        like `handle_request`.
        """
        target = _target(url)
        if deadline is None:
            deadline = time.monotonic() + self.connect_timeout + self.read_timeout
        status, _, body = self._exchange(
            target.origin, "POST", target.path,
            [*target.headers, ("Content-Length", str(len(content))), *headers], content,
            deadline)
        return status, body

    def _connections(self) -> dict[Origin, http.client.HTTPConnection]:
        return self._local.__dict__.setdefault("connections", {})  # type: ignore[no-any-return]

    def _exchange(self, origin: Origin, method: str, path: str,
                  headers: Sequence[tuple[str, str]], content: bytes, deadline: float, *,
                  connect_timeout: float | None = None, read_timeout: float | None = None,
                  request: httpx.Request | None = None,
                  ) -> tuple[int, list[tuple[str, str]], bytes]:
        connections = self._connections()
        connection = connections.get(origin)
        if connection is not None and _closed_by_peer(connection):
            self._drop(connections, origin)
            connection = None
        if connection is None:
            limit = time.monotonic() + (connect_timeout or self.connect_timeout)
            connection = self._open(connections, origin, min(limit, deadline))
        sock = connection.sock
        assert sock is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:  # checked right before the request is written
            raise DeadlinePassed(f"the attempt's deadline passed {-remaining:.3f} s before "
                                 "its request could be written; nothing was sent")
        written = False
        with self._watchdog.watch(sock, deadline) as watch:
            try:
                sock.settimeout(remaining)
                connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    connection.putheader(name, value)
                connection.endheaders(content)
                written = True
                sock.settimeout(max(0.001, min(read_timeout or self.read_timeout,
                                               deadline - time.monotonic())))
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop(connections, origin)
                timed_out = watch.fired or isinstance(exc, TimeoutError)
                text = "timed out" if watch.fired else (str(exc) or "timed out")
                if not written:
                    error: type[httpx.TransportError] = (
                        httpx.WriteTimeout if timed_out else httpx.WriteError)
                elif timed_out:
                    error = httpx.ReadTimeout
                elif isinstance(exc, http.client.HTTPException):
                    error = httpx.RemoteProtocolError
                else:
                    error = httpx.ReadError
                if timed_out:
                    raise error(text, request=request) from exc
                raise error(f"{type(exc).__name__}: {exc}", request=request) from exc
        if response.will_close:
            self._drop(connections, origin)
        return response.status, response.getheaders(), body

    def _open(self, connections: dict[Origin, http.client.HTTPConnection], origin: Origin,
              deadline: float) -> http.client.HTTPConnection:
        connection = self._connect(origin, deadline)
        connections[origin] = connection
        with self._lock:
            self._all.add(connection)
        return connection

    def _connect(self, origin: Origin, deadline: float) -> http.client.HTTPConnection:
        """A connected (and for https, TLS-established) connection, by `deadline`."""
        scheme, host, port = origin
        port = port or (443 if scheme == "https" else 80)
        sock: socket.socket | None = None
        last: OSError | None = None
        for family, kind, proto, _, address in self._lookup(host, port, deadline):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            candidate = socket.socket(family, kind, proto)
            try:
                candidate.settimeout(remaining)
                candidate.connect(address)
            except OSError as exc:
                candidate.close()
                last = exc
                continue
            sock = candidate
            break
        if sock is None:
            if last is None or isinstance(last, TimeoutError):
                raise httpx.ConnectTimeout(f"could not connect to {host} in time")
            raise httpx.ConnectError(f"{type(last).__name__}: {last}")
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                context = self._tls_context()
                with self._watchdog.watch(sock, deadline) as watch:
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                    try:
                        sock = context.wrap_socket(sock, server_hostname=host)
                    except OSError as exc:
                        if watch.fired or isinstance(exc, TimeoutError):
                            raise TimeoutError("TLS handshake timed out") from exc
                        raise
        except TimeoutError as exc:
            sock.close()
            raise httpx.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            sock.close()
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        # the socket is connected (and wrapped) already: http.client only writes and reads
        connection = http.client.HTTPConnection(host, port)
        connection.sock = sock
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:  # the system's CAs, loaded once (tens of ms each time)
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _lookup(self, host: str, port: int, deadline: float) -> list[tuple[Any, ...]]:
        """The addresses of `host`, found by `deadline` (getaddrinfo itself has no timeout,
        so the lookup runs in a small pool and is given up on at the deadline)."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:  # an address literal needs no lookup
            return self._resolve(host, port, 0, socket.SOCK_STREAM)
        future = self._lookup_pool().submit(self._resolve, host, port, 0, socket.SOCK_STREAM)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            future.cancel()
            raise httpx.ConnectTimeout(f"looking up {host} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc

    def _lookup_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._lookups is None or self._lookups[0] != os.getpid():
                self._lookups = (os.getpid(), ThreadPoolExecutor(
                    DNS_THREADS, thread_name_prefix="monitao-dns"))
            return self._lookups[1]

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
            lookups, self._lookups = self._lookups, None
        for connection in connections:
            connection.close()
        if lookups is not None and lookups[0] == os.getpid():
            lookups[1].shutdown(wait=False, cancel_futures=True)


class _Watch:
    """One socket watched until a deadline; `fired` once the watchdog shut it down."""

    __slots__ = ("cancelled", "fired", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.fired, self.cancelled = sock, False, False


class _Watchdog:
    """Shuts a socket down when its deadline passes, so that blocking calls on it return:
    socket timeouts bound each call, this bounds them all together."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._pid: int | None = None

    @contextmanager
    def watch(self, sock: socket.socket, deadline: float) -> Iterator[_Watch]:
        """Watch `sock` while the block runs; it is shut down if `deadline` passes first."""
        watch = _Watch(sock)
        with self._wake:
            if self._pid != os.getpid():  # first use, or a prefork child: a thread of its own
                self._pid, self._heap = os.getpid(), []
                threading.Thread(target=self._run, name="monitao-http-deadlines",
                                 daemon=True).start()
            first = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, next(self._order), watch))
            if first:
                self._wake.notify()
        try:
            yield watch
        finally:
            with self._wake:
                watch.cancelled = True

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                deadline, _, watch = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                heapq.heappop(self._heap)
                watch.fired = True
                with suppress(OSError):
                    watch.sock.shutdown(socket.SHUT_RDWR)


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
