"""A local PagerDuty Events API v2 server with ingest semantics and injectable faults, and
its REST API v2 (`simulator.rest`) on an HTTPS listener of its own."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import random
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from simulator.faults import FAULT_NAMES, Faults, admit, apply_faults
from simulator.rest import DEMO_API_TOKEN, RestState, control
from simulator.tls import Certificates, make_certificates
from simulator.validation import InvalidEvent, parse_event, unrecognized
from simulator.webhooks import WebhookSender, webhook_body

__all__ = ["DEMO_API_TOKEN", "Faults", "Simulator", "serve"]

# Refused unread: far past PagerDuty's 512 KB, only a broken client sends this much.
MAX_READ_BYTES = 16 * 1024 * 1024
THROTTLE_BODY = {
    "status": "throttle event",
    "message": "Requests for this service are arriving too quickly. Please retry later.",
}
SERVER_ERROR_BODY = {"status": "error", "message": "internal server error"}
OPEN = ("triggered", "acknowledged")
# In a string of the `error_body` fault, replaced by the routing key the request carried.
ROUTING_KEY_PLACEHOLDER = "{routing_key}"
RESPONDER_ACTIONS = ("/acknowledge", "/resolve")
# A client that connects to the HTTPS listener and never finishes the handshake holds only
# its own thread, and only this long.
HANDSHAKE_TIMEOUT_SECONDS = 5.0


def _fault_body(status: int, error_body: dict[str, Any] | None = None,
                routing_key: object = None) -> dict[str, Any]:
    if error_body is not None:
        key = routing_key if isinstance(routing_key, str) else ""
        return _echo(error_body, key)  # type: ignore[no-any-return]
    if status == 429:
        return dict(THROTTLE_BODY)
    if status >= 500:
        return dict(SERVER_ERROR_BODY)
    if status == 400:
        return {
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": ["status 400 forced by the simulator"],
        }
    return {"status": "forced", "message": f"status {status} forced by the simulator"}


def _echo(value: Any, routing_key: str) -> Any:
    """`value` with the routing key in place of each `{routing_key}`."""
    if isinstance(value, str):
        return value.replace(ROUTING_KEY_PLACEHOLDER, routing_key)
    if isinstance(value, list):
        return [_echo(item, routing_key) for item in value]
    if isinstance(value, dict):
        return {name: _echo(item, routing_key) for name, item in value.items()}
    return value


def _identify(fields: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(sha256 of the routing key, dedup_key, event_action) where each is a string."""
    key, dedup_key, action = (fields.get(n) for n in ("routing_key", "dedup_key", "event_action"))
    return (
        hashlib.sha256(key.encode()).hexdigest() if isinstance(key, str) else None,
        dedup_key if isinstance(dedup_key, str) else None,
        action if isinstance(action, str) else None,
    )


class _State:
    """Everything the simulator remembers, behind one lock. Holds no raw routing key."""

    def __init__(self, faults: Faults, seed: int | None, clock: Callable[[], float],
                 rest_tokens: Iterable[str] = (DEMO_API_TOKEN,)) -> None:
        self.lock = threading.Lock()
        self.faults = faults
        self.baseline = dataclasses.replace(faults)
        self.rng = random.Random(seed)
        self.clock = clock
        self.webhooks = WebhookSender()
        self.rest = RestState(rest_tokens, self.webhooks, self.incident, clock, seed)
        self.clear()

    def clear(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.incidents: list[dict[str, Any]] = []
        self.latest: dict[tuple[str, str], dict[str, Any]] = {}
        self.windows: dict[str, deque[float]] = {}

    def latency(self) -> float:
        with self.lock:
            jitter = self.faults.latency_jitter_ms * self.rng.random()
            return (self.faults.latency_ms + jitter) / 1000.0

    def set_faults(self, changes: dict[str, Any]) -> dict[str, Any]:
        return apply_faults(self.faults, changes, self.lock)

    def reset(self) -> None:
        with self.lock:
            self.clear()
            for name in FAULT_NAMES:
                setattr(self.faults, name, getattr(self.baseline, name))
        self.rest.reset()
        self.webhooks.include_incident_key = True

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        """A copy of the incident of that id (``PSIM000001``...), or None."""
        with self.lock:
            found = [i for i in self.incidents if i["id"] == incident_id]
            return copy.deepcopy(found[0]) if found else None

    def stall(self) -> float:
        """Seconds to hold the request now arriving before processing it (0: answer it)."""
        with self.lock:
            faults = self.faults
            if faults.stall_next > 0:
                faults.stall_next -= 1
            elif not (faults.stall_rate > 0 and self.rng.random() < faults.stall_rate):
                return 0.0
            return faults.stall_ms / 1000.0

    def enqueue(self, raw: bytes, *, stalled: bool = False) -> tuple[int, dict[str, Any]] | None:
        """Decide the answer to one ``/v2/enqueue`` body; None means drop the connection.
        `stalled`: it was held before processing, and its answer will not be sent."""
        # Parsing up to 512 KB of JSON is the slow part: keep it outside the lock.
        event: dict[str, Any] | None = None
        rejection: InvalidEvent | None = None
        try:
            event = parse_event(raw)
        except InvalidEvent as exc:
            rejection = exc
        fields = event or (rejection.parsed if rejection else None) or {}
        digest, dedup_key, action = _identify(fields)
        change: dict[str, Any] | None = None

        with self.lock:
            faults = self.faults
            answer: tuple[int, dict[str, Any]] | None
            if faults.drop_connections:
                answer = None
            elif faults.force_status is not None:
                answer = (faults.force_status, _fault_body(
                    faults.force_status, faults.error_body, fields.get("routing_key")))
            elif faults.fail_next > 0:
                faults.fail_next -= 1
                answer = (faults.error_status, _fault_body(
                    faults.error_status, faults.error_body, fields.get("routing_key")))
            elif faults.error_rate > 0 and self.rng.random() < faults.error_rate:
                answer = (faults.error_status, _fault_body(
                    faults.error_status, faults.error_body, fields.get("routing_key")))
            elif event is None or digest is None:
                answer = (400, (rejection or unrecognized()).body())
            elif not admit(self.windows, digest, faults.rate_limit, self.clock()):
                answer = (429, dict(THROTTLE_BODY))
            else:
                dedup_key, change = self._ingest(event, digest, stalled)
                answer = (
                    202,
                    {"status": "success", "message": "Event processed", "dedup_key": dedup_key},
                )
            self.requests.append(
                {
                    "seq": len(self.requests) + 1,
                    "ts": time.time(),
                    "status": answer[0] if answer else None,
                    "routing_key_hash": digest[:12] if digest else None,
                    "dedup_key": dedup_key,
                    "event_action": action,
                    "stalled": stalled,
                }
            )
        if change is not None:  # posted by the sender's thread, never under the lock
            self.webhooks.send(change)
        return answer

    def _ingest(self, event: dict[str, Any], digest: str,
                stalled: bool = False) -> tuple[str, dict[str, Any] | None]:
        """Apply one accepted event; its dedup_key and the webhook body of any change."""
        action = event["event_action"]
        dedup_key = event.get("dedup_key") or uuid.UUID(int=self.rng.getrandbits(128)).hex
        incident = self.latest.get((digest, dedup_key))
        is_open = incident is not None and incident["status"] in OPEN
        change: dict[str, Any] | None = None
        payload = event.get("payload") or {}
        if action == "trigger" and not is_open:
            service_id, service_name = self.rest.service_for(digest)
            incident = {
                "id": f"PSIM{len(self.incidents) + 1:06d}",
                "routing_key_hash": digest[:12],
                "service_id": service_id,
                "service_name": service_name,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace(
                    "+00:00", "Z"),
                "dedup_key": dedup_key,
                "status": "triggered",
                "number": incident["number"] + 1 if incident else 1,
                "summary": payload["summary"],
                "severity": payload["severity"],
                "events": 1,
                "history": [action],
            }
            self.incidents.append(incident)
            self.latest[(digest, dedup_key)] = incident
            change = webhook_body("incident.triggered", incident, None)
        elif is_open and incident is not None:
            incident["events"] += 1
            incident["history"].append(action)
            if action == "trigger":
                incident["summary"] = payload["summary"]
                incident["severity"] = payload["severity"]
            else:
                status = "acknowledged" if action == "acknowledge" else "resolved"
                if incident["status"] != status:
                    change = webhook_body(f"incident.{status}", incident | {"status": status},
                                          None)
                incident["status"] = status
        body = {**event, "routing_key": "***"}
        self.events.append(
            {
                "seq": len(self.events) + 1,
                "ts": time.time(),
                "routing_key_hash": digest[:12],
                "dedup_key": dedup_key,
                "event_action": action,
                "body": body,
                "dropped": action != "trigger" and not is_open,
                "stalled": stalled,
            }
        )
        return dedup_key, change

    def respond(self, dedup_key: str, action: str, agent: str) -> dict[str, Any] | None:
        """A responder acknowledges or resolves the newest incident of `dedup_key` in the
        web UI; its webhook goes out if the status changed. None when there is no incident."""
        status = "acknowledged" if action == "acknowledge" else "resolved"
        change = None
        with self.lock:
            found = [i for i in self.incidents if i["dedup_key"] == dedup_key]
            if not found:
                return None
            incident = found[-1]
            if incident["status"] in OPEN and incident["status"] != status:
                incident["status"] = status
                incident["history"].append(f"{action} by {agent}")
                change = webhook_body(f"incident.{status}", incident, agent)
            result = copy.deepcopy(incident)
        if change is not None:
            self.webhooks.send(change)
        return result

    def snapshot(self, name: str, dedup_key: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            items = getattr(self, name)
            chosen = [i for i in items if dedup_key is None or i.get("dedup_key") == dedup_key]
            return copy.deepcopy(chosen)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, delayed ACKs add ~40 ms to each.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line."""

    def do_GET(self) -> None:
        if self._read_body() is None:
            return
        state = self.server.state
        url = urlsplit(self.path)
        dedup_key = parse_qs(url.query).get("dedup_key", [None])[0]
        if url.path == "/_sim/health":
            self._send(200, {"ok": True})
        elif url.path in ("/_sim/events", "/_sim/incidents", "/_sim/requests"):
            name = url.path.removeprefix("/_sim/")
            self._send(200, state.snapshot(name, dedup_key))
        elif url.path == "/_sim/faults":
            self._send(200, state.set_faults({}))
        elif (answer := control(state.rest, "GET", url.path, b"")) is not None:
            self._send(*answer)
        elif state.rest.owns(url.path):
            self._rest(b"")
        else:
            self._not_found()

    def do_POST(self) -> None:
        raw = self._read_body()
        if raw is None:
            return
        state = self.server.state
        path = urlsplit(self.path).path
        if path == "/v2/enqueue":
            # Latency is slept before deciding, outside the lock, so slow answers overlap.
            time.sleep(state.latency())
            stall = state.stall()
            if stall:  # processed late, and never answered
                time.sleep(stall)
                state.enqueue(raw, stalled=True)
                self._drop()
                return
            answer = state.enqueue(raw)
            if answer is None:
                self._drop()
            else:
                self._send(*answer)
        elif path == "/_sim/reset":
            state.reset()
            self._send(200, {"ok": True})
        elif path == "/_sim/faults":
            self._post_faults(raw)
        elif path.startswith("/_sim/incidents/") and path.endswith(RESPONDER_ACTIONS):
            self._respond(path, raw)
        elif (answer := control(state.rest, "POST", path, raw)) is not None:
            self._send(*answer)
        elif state.rest.owns(path):
            self._rest(raw)
        else:
            self._not_found()

    def _rest(self, raw: bytes) -> None:
        """One request to the REST API (simulator.rest), whichever listener it came in on."""
        answer = self.server.state.rest.handle(self.command, self.path, self.headers, raw)
        if answer is None:
            self._drop()
        else:
            self._send(*answer)

    def _rest_only(self) -> None:
        raw = self._read_body()
        if raw is None:
            return
        if self.server.state.rest.owns(urlsplit(self.path).path):
            self._rest(raw)
        else:
            self._unsupported()

    def _respond(self, path: str, raw: bytes) -> None:
        """`POST /_sim/incidents/{dedup_key}/acknowledge|resolve`, body `{"agent": "name"}`."""
        dedup_key, _, action = path.removeprefix("/_sim/incidents/").rpartition("/")
        try:
            options = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError):
            options = None
        if not isinstance(options, dict) or not isinstance(options.get("agent", ""), str):
            self._send(400, {"ok": False, "errors": ['body must be {"agent": "name"}']})
            return
        incident = self.server.state.respond(unquote(dedup_key), action,
                                             options.get("agent") or "Simulated Responder")
        if incident is None:
            self._send(404, {"ok": False, "errors": [f"no incident with dedup_key {dedup_key}"]})
        else:
            self._send(200, incident)

    def _post_faults(self, raw: bytes) -> None:
        try:
            changes = json.loads(raw)
        except (ValueError, RecursionError):
            changes = None
        if not isinstance(changes, dict):
            self._send(400, {"ok": False, "errors": ["body must be a JSON object"]})
            return
        try:
            self._send(200, self.server.state.set_faults(changes))
        except ValueError as exc:
            self._send(400, {"ok": False, "errors": [str(exc)]})

    def _read_body(self) -> bytes | None:
        """Exactly Content-Length bytes (none if absent); None once an error has been sent."""
        header = self.headers.get("Content-Length")
        try:
            length = int(header) if header is not None else 0
        except ValueError:
            length = -1
        if length < 0 or length > MAX_READ_BYTES:
            self.close_connection = True
            error = f"unacceptable Content-Length: {header}"
            self._send(
                400, InvalidEvent("invalid event", "Event object is invalid", [error]).body()
            )
            return None
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: Any) -> None:
        """`body` as JSON; None: no body at all (a 204)."""
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        if body is not None or status != 204:
            self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self) -> None:
        path = urlsplit(self.path).path
        self._send(404, {"status": "not found", "message": f"no route {self.command} {path}"})

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _unsupported(self) -> None:
        self.close_connection = True
        self._not_found()

    do_PUT = do_DELETE = _rest_only
    do_PATCH = do_HEAD = do_OPTIONS = _unsupported


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        """End idle keep-alive connections, whose threads would otherwise serve on after stop."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            return  # clients hanging up mid-request are routine, not worth a traceback
        super().handle_error(request, client_address)


class _TlsServer(_Server):
    """The HTTPS listener: the TLS handshake happens in the connection's own thread, with a
    deadline, so a client that connects and says nothing never holds up `accept`."""

    def __init__(self, address: tuple[str, int], state: _State,
                 context: ssl.SSLContext) -> None:
        super().__init__(address, state)
        self.context = context

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
            secured = self.context.wrap_socket(request, server_side=True)
            secured.settimeout(None)
        except (OSError, ValueError):  # timeouts and TLS errors are OSErrors
            self.shutdown_request(request)
            return
        super().process_request_thread(secured, client_address)


class Simulator:
    """A PagerDuty Events API v2 look-alike on a local port, served from a daemon thread,
    and PagerDuty's REST API v2 (`simulator.rest`) over HTTPS on a second port.

    ``received()``, ``requests()`` and ``incidents()`` report what happened, identifying
    routing keys only by ``sha256(routing_key)[:12]``. ``clock`` (monotonic seconds) drives the
    rate-limit windows and exists so tests can move time without sleeping.

    REST: ``rest_url`` (``https://127.0.0.1:PORT``) with a throwaway CA in ``ca_file`` (for
    ``verify=``); the tokens it accepts are ``rest_tokens`` (default: ``DEMO_API_TOKEN``) and
    those of ``add_rest_token``. ``rest=False`` starts no HTTPS listener (the REST paths still
    answer on the plain one). ``rest_faults`` are the REST side's, apart from ``faults``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        seed: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        rest: bool = True,
        rest_port: int = 0,
        rest_tokens: Iterable[str] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        tokens = (DEMO_API_TOKEN,) if rest_tokens is None else tuple(rest_tokens)
        self._state = _State(faults if faults is not None else Faults(), seed, clock, tokens)
        self._state.webhooks.configure(webhook_url, webhook_secret)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._rest = rest
        self._rest_port = rest_port
        self._tls_server: _TlsServer | None = None
        self._tls_thread: threading.Thread | None = None
        self._certificates: Certificates | None = None

    @property
    def faults(self) -> Faults:
        """The live fault settings; assigning their attributes takes effect immediately."""
        return self._state.faults

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8123``; the port is known once started."""
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return f"http://{self._host}:{self._server.server_address[1]}"

    @property
    def events_url(self) -> str:
        """The alert events endpoint, ``url + "/v2/enqueue"``."""
        return self.url + "/v2/enqueue"

    @property
    def rest_url(self) -> str:
        """The REST API's base URL over HTTPS, e.g. ``https://127.0.0.1:8443``."""
        if self._tls_server is None:
            raise RuntimeError("the simulator's HTTPS listener is not running")
        host = "127.0.0.1" if self._host in ("", "0.0.0.0", "::") else self._host
        return f"https://{host}:{self._tls_server.server_address[1]}"

    @property
    def ca_file(self) -> str:
        """Path of the PEM of the CA that signed the HTTPS listener's certificate."""
        if self._certificates is None:
            raise RuntimeError("the simulator's HTTPS listener is not running")
        return str(self._certificates.ca_file)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting only ``ca_file``, for ``verify=``: httpx 0.28
        deprecates ``verify=<path>`` (a DeprecationWarning, an error under this project's
        pytest settings)."""
        return ssl.create_default_context(cafile=self.ca_file)

    def start(self) -> Simulator:
        """Bind and serve in daemon threads (HTTP, and HTTPS unless ``rest=False``)."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._server = _Server((self._host, self._port), self._state)
        if self._rest:
            try:
                self._certificates = make_certificates(self._host)
                self._tls_server = _TlsServer((self._host, self._rest_port), self._state,
                                              self._certificates.server_context())
            except BaseException:
                self.stop()
                raise
            self._tls_thread = self._serve(self._tls_server, "pagerduty-simulator-tls")
        self._thread = self._serve(self._server, "pagerduty-simulator")
        return self

    @staticmethod
    def _serve(server: _Server, name: str) -> threading.Thread:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name=name, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop serving, close the listening sockets and any keep-alive connections."""
        server, self._server = self._server, None
        if server is None:
            return
        tls, self._tls_server = self._tls_server, None
        for each, thread in ((server, self._thread), (tls, self._tls_thread)):
            if each is None:
                continue
            if thread is not None:
                each.shutdown()
            each.close_connections()
            each.server_close()
            if thread is not None:
                thread.join()
        self._thread = self._tls_thread = None
        if self._certificates is not None:
            self._certificates.remove()
            self._certificates = None
        self._state.webhooks.close()

    def set_webhook(self, url: str | None, secret: str | None, *,
                    include_incident_key: bool | None = None) -> None:
        """Send webhooks v3 to `url`, signed with `secret`, on each incident state change
        (None: stop sending). `include_incident_key=False`: webhooks to every receiver
        (subscriptions too) lack ``data.incident_key``, as PagerDuty's older payloads do;
        None keeps the current choice (`reset()` restores True)."""
        self._state.webhooks.configure(url, secret)
        if include_incident_key is not None:
            self._state.webhooks.include_incident_key = include_incident_key

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Every webhook tried so far: receiver (``target``: ``configured`` or a subscription
        id), ids, type, final HTTP status (None: no answer)."""
        return self._state.webhooks.snapshot()

    def respond(self, dedup_key: str, action: str = "acknowledge",
                agent: str = "Simulated Responder") -> dict[str, Any] | None:
        """Play the responder (as `POST /_sim/incidents/{dedup_key}/{action}` does)."""
        return self._state.respond(dedup_key, action, agent)

    def set_faults(self, **changes: Any) -> None:
        """Change several faults at once; raise ValueError for an unknown name or bad value."""
        self._state.set_faults(changes)

    def received(self) -> list[dict[str, Any]]:
        """Every accepted (202) event in arrival order, routing key masked as ``***``."""
        return self._state.snapshot("events")

    def requests(self) -> list[dict[str, Any]]:
        """Every ``/v2/enqueue`` request whatever its answer; ``status`` None = dropped socket."""
        return self._state.snapshot("requests")

    def incidents(self) -> list[dict[str, Any]]:
        """Every incident ever opened, oldest first, with its current status."""
        return self._state.snapshot("incidents")

    def reset(self) -> None:
        """Forget events, requests, incidents and rate windows; restore the initial faults.
        REST too: windows, subscriptions, its request log and faults (tokens and services
        stay, the webhook receiver too; webhooks carry ``incident_key`` again)."""
        self._state.reset()

    @property
    def rest_faults(self) -> Faults:
        """The REST API's live faults (``rate_limit`` per token, None by default)."""
        return self._state.rest.faults

    def set_rest_faults(self, **changes: Any) -> None:
        """Change REST faults; raise ValueError for an unknown name or bad value."""
        self._state.rest.set_faults(changes)

    def add_rest_token(self, token: str) -> None:
        """Accept `token` (``Authorization: Token token=...``) from now on."""
        self._state.rest.add_token(token)

    def add_service(self, service_id: str, name: str | None = None,
                    routing_key: str | None = None) -> dict[str, Any]:
        """Add a service (``GET /services/{id}``); Events API incidents of `routing_key`
        then belong to it (others to ``PSIMSVC``). Returns it, the key only as a hash."""
        return self._state.rest.add_service(service_id, name, routing_key)

    def maintenance_windows(self) -> list[dict[str, Any]]:
        """Windows not deleted, as the API shows them, plus ``status``
        (``future``/``ongoing``/``ended``)."""
        return self._state.rest.maintenance_windows()

    def webhook_subscriptions(self) -> list[dict[str, Any]]:
        """Webhook subscriptions as the API lists them (``delivery_method.secret`` null)."""
        return self._state.rest.webhook_subscriptions()

    def rest_requests(self) -> list[dict[str, Any]]:
        """Every REST request: method, path, status (None: dropped), ``token_ok``,
        ``token_hash`` (12 hex digits of the token's SHA-256), ``from``."""
        return self._state.rest.request_log()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(host: str, port: int, faults: Faults, webhook_url: str | None = None,
          webhook_secret: str | None = None, *, rest_port: int = 0,
          rest_tokens: Iterable[str] | None = None) -> None:
    """Run a simulator in the foreground until Ctrl-C or SIGTERM (for the CLI); with a
    webhook URL and secret, incident changes are sent there as signed webhooks v3. Prints
    the Events API's address, then the REST API's and the path of its CA certificate."""
    stopping = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # signal handlers can only be installed from the main thread
        previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        with Simulator(host, port, faults, webhook_url=webhook_url,
                       webhook_secret=webhook_secret, rest_port=rest_port,
                       rest_tokens=rest_tokens) as simulator:
            print(f"PagerDuty simulator listening on {simulator.url}", flush=True)
            print(f"PagerDuty REST API (HTTPS) on {simulator.rest_url}", flush=True)
            print(f"CA certificate for it: {simulator.ca_file}", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while not stopping.wait(0.5):
                    pass
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
