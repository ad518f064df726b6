"""A local PagerDuty Events API v2 server with ingest semantics and injectable faults."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import random
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from simulator.validation import InvalidEvent, parse_event, unrecognized
from simulator.webhooks import WebhookSender, webhook_body

__all__ = ["Faults", "Simulator", "serve"]

RATE_WINDOW_SECONDS = 60.0
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


@dataclasses.dataclass
class Faults:
    """Misbehaviour to inject into ``/v2/enqueue``; change it while the simulator runs."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    rate_limit: int | None = 120
    force_status: int | None = None
    fail_next: int = 0
    drop_connections: bool = False
    # Delayed processing: the next `stall_next` requests (and each further one with
    # probability `stall_rate`) are held `stall_ms` before being processed as usual (their
    # event counts), then their connection is closed without an answer: a request PagerDuty
    # took whose answer was lost, processed after whatever the sender sent next.
    stall_next: int = 0
    stall_rate: float = 0.0
    stall_ms: float = 0.0
    # The body of the forced answers above (force_status, fail_next, error_rate) instead of
    # the usual one: an endpoint's own error text. `{routing_key}` in any of its strings is
    # replaced by the routing key received, as an endpoint that echoes it would answer.
    error_body: dict[str, Any] | None = None


_FAULT_NAMES = tuple(field.name for field in dataclasses.fields(Faults))


def _check_fault(name: str, value: Any) -> Any:
    """Return ``value`` normalised for fault ``name``, or raise ValueError naming the problem."""
    if name not in _FAULT_NAMES:
        raise ValueError(f"unknown fault field '{name}'")
    if value is None and name in ("rate_limit", "force_status", "error_body"):
        return None
    if name == "error_body":
        if not isinstance(value, dict):
            raise ValueError(f"'{name}' must be a JSON object or null")
        return copy.deepcopy(value)
    if name == "drop_connections":
        if not isinstance(value, bool):
            raise ValueError(f"'{name}' must be a boolean")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{name}' must be a number")
    if name in ("latency_ms", "latency_jitter_ms", "error_rate", "stall_rate", "stall_ms"):
        rate = name in ("error_rate", "stall_rate")
        if not 0.0 <= value <= (1.0 if rate else math.inf):
            span = "between 0 and 1" if rate else "zero or more"
            raise ValueError(f"'{name}' must be {span}")
        return float(value)
    if not isinstance(value, int):
        raise ValueError(f"'{name}' must be an integer")
    if name.endswith("status") and not 200 <= value <= 599:
        raise ValueError(f"'{name}' must be an HTTP status between 200 and 599")
    if value < 0:
        raise ValueError(f"'{name}' must not be negative")
    return value


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

    def __init__(self, faults: Faults, seed: int | None, clock: Callable[[], float]) -> None:
        self.lock = threading.Lock()
        self.faults = faults
        self.baseline = dataclasses.replace(faults)
        self.rng = random.Random(seed)
        self.clock = clock
        self.webhooks = WebhookSender()
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
        checked = {name: _check_fault(name, value) for name, value in changes.items()}
        with self.lock:
            for name, value in checked.items():
                setattr(self.faults, name, value)
            return dataclasses.asdict(self.faults)

    def reset(self) -> None:
        with self.lock:
            self.clear()
            for name in _FAULT_NAMES:
                setattr(self.faults, name, getattr(self.baseline, name))

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
            elif not self._admit(digest, faults.rate_limit):
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

    def _admit(self, digest: str, limit: int | None) -> bool:
        """Count the event against its routing key's sliding window, unless that is full."""
        now = self.clock()
        window = self.windows.setdefault(digest, deque())
        while window and window[0] <= now - RATE_WINDOW_SECONDS:
            window.popleft()
        if limit is not None and len(window) >= limit:
            return False
        window.append(now)
        return True

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
            incident = {
                "id": f"PSIM{len(self.incidents) + 1:06d}",
                "routing_key_hash": digest[:12],
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
        else:
            self._not_found()

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
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
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

    do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _unsupported


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
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # clients hanging up mid-request are routine, not worth a traceback
        super().handle_error(request, client_address)


class Simulator:
    """A PagerDuty Events API v2 look-alike on a local port, served from a daemon thread.

    ``received()``, ``requests()`` and ``incidents()`` report what happened, identifying
    routing keys only by ``sha256(routing_key)[:12]``. ``clock`` (monotonic seconds) drives the
    rate-limit window and exists so tests can move time without sleeping.
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
    ) -> None:
        self._host = host
        self._port = port
        self._state = _State(faults if faults is not None else Faults(), seed, clock)
        self._state.webhooks.configure(webhook_url, webhook_secret)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

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

    def start(self) -> Simulator:
        """Bind and serve in a daemon thread; return self."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._server = _Server((self._host, self._port), self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="pagerduty-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and any keep-alive connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._state.webhooks.close()

    def set_webhook(self, url: str | None, secret: str | None) -> None:
        """Send webhooks v3 to `url`, signed with `secret`, on each incident state change
        (None: stop sending)."""
        self._state.webhooks.configure(url, secret)

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Every webhook tried so far: ids, type, final HTTP status (None: no answer)."""
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
        """Forget events, requests, incidents and rate windows; restore the initial faults."""
        self._state.reset()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(host: str, port: int, faults: Faults, webhook_url: str | None = None,
          webhook_secret: str | None = None) -> None:
    """Run a simulator in the foreground until Ctrl-C or SIGTERM (for the CLI); with a
    webhook URL and secret, incident changes are sent there as signed webhooks v3."""
    stopping = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # signal handlers can only be installed from the main thread
        previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        with Simulator(host, port, faults, webhook_url=webhook_url,
                       webhook_secret=webhook_secret) as simulator:
            print(f"PagerDuty simulator listening on {simulator.url}", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while not stopping.wait(0.5):
                    pass
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
