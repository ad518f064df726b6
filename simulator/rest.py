"""PagerDuty's REST API v2 as the simulator plays it: state, routes and faults of its own.

Served on the simulator's HTTPS listener (``Simulator.rest_url``, CA in
``Simulator.ca_file``; `RestApiV2Client` accepts only ``https://``) and on the plain one.
Every request needs ``Authorization: Token token=<token>`` with a known token (401
otherwise); tokens are kept only as their SHA-256, the request log names them by a 12-digit
prefix of it, and ``From`` is recorded. Routes:

- ``GET /services``, ``GET /services/{id}``: ``PSIMSVC`` "Simulated service" and those of
  ``Simulator.add_service`` (status ``maintenance`` while a window covers it).
- ``GET|POST /maintenance_windows`` (``service_ids[]``, ``filter``
  past/future/ongoing/open/all, ``query``, classic pagination), ``GET|PUT|DELETE
  /maintenance_windows/{id}``: DELETE removes a future window, ends an ongoing one (its
  ``end_time`` becomes now; it is kept) and refuses an ended one with 405, as PUT does.
- ``GET|POST /webhook_subscriptions``, ``GET|DELETE /webhook_subscriptions/{id}``: the
  signing secret is in the POST's answer only; from then on the simulator delivers the
  webhooks v3 of the filtered service (or every service with an ``account_reference``) whose
  event type the subscription lists, signed with that secret.
- ``GET /incidents/{id}``: incidents the Events API opened, ``incident_key`` their dedup_key.

Faults of their own (``Simulator.rest_faults``, a `Faults` whose ``rate_limit`` is per token
and None by default; the ``stall_*`` fields do not apply): forced answers change no state.
Control: ``GET|POST /_sim/rest/faults``, ``GET /_sim/rest/{maintenance_windows,
webhook_subscriptions,requests,services}``, ``POST /_sim/rest/tokens {"token"}``, ``POST
/_sim/rest/services {"id", "name", "routing_key"}``, ``GET|POST /_sim/webhooks
{"include_incident_key": false}`` (webhooks without ``data.incident_key``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import json
import random
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from simulator.faults import Faults, admit, apply_faults
from simulator.rest_models import (
    API_ORIGIN,
    RestError,
    error_body,
    format_time,
    paginate,
    service_reference,
    subscription_input,
    window_input,
)
from simulator.webhooks import DEFAULT_SERVICE_ID, DEFAULT_SERVICE_NAME, WebhookSender

__all__ = ["DEMO_API_TOKEN", "RestState", "token_hash"]

# The token the simulator knows when given none: `make run`'s demo and local trials.
DEMO_API_TOKEN = "simulator-demo-api-token-0000000"
RESOURCES = ("services", "maintenance_windows", "webhook_subscriptions", "incidents")
# A `From` header is recorded for tests to check, not kept whole whatever its size.
MAX_FROM_CHARS = 200
ID_ALPHABET = string.ascii_uppercase + string.digits
TOKEN_HEADER = re.compile(r'^\s*Token\s+token="?([^"\s]+)"?\s*$', re.IGNORECASE)
WINDOW_FILTERS = ("past", "future", "ongoing", "open", "all")

Answer = tuple[int, Any]


def token_hash(token: str) -> str:
    """SHA-256 of an API token, hex: how the simulator keeps and names tokens."""
    return hashlib.sha256(token.encode()).hexdigest()


def _window_status(record: dict[str, Any], now: datetime) -> str:
    if now < record["start_time"]:
        return "future"
    return "ongoing" if now < record["end_time"] else "ended"


class RestState:
    """The REST side's records behind one lock: tokens (hashed), services, maintenance
    windows, webhook subscriptions, the request log and the REST faults.

    Lock order: the Events API's lock may be held when this one is taken (an incident
    asks which service its routing key belongs to), never the other way round."""

    def __init__(self, tokens: Iterable[str], webhooks: WebhookSender,
                 incident: Callable[[str], dict[str, Any] | None],
                 clock: Callable[[], float] = time.monotonic, seed: int | None = None) -> None:
        self.lock = threading.Lock()
        self.faults = Faults(rate_limit=None)
        self.baseline = dataclasses.replace(self.faults)
        self.rng = random.Random(seed)
        self.clock = clock
        self.webhooks = webhooks
        self._incident = incident
        self.tokens = {token_hash(token) for token in tokens}
        self.services: dict[str, dict[str, Any]] = {}
        self.service_keys: dict[str, str] = {}
        self.add_service(DEFAULT_SERVICE_ID, DEFAULT_SERVICE_NAME)
        self.clear()

    def clear(self) -> None:
        self.windows: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.rate: dict[str, deque[float]] = {}
        self.sequence = 0

    # Configuration

    def add_token(self, token: str) -> None:
        """Accept `token` from now on."""
        if not isinstance(token, str) or not token.strip():
            raise ValueError("a token must be a non-empty string")
        with self.lock:
            self.tokens.add(token_hash(token))

    def add_service(self, service_id: str, name: str | None = None,
                    routing_key: str | None = None) -> dict[str, Any]:
        """Add (or rename) a service; incidents of `routing_key` then belong to it."""
        if not isinstance(service_id, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}",
                                                                service_id):
            raise ValueError("a service id must be 1 to 64 letters, digits, '_' or '-'")
        if name is not None and not isinstance(name, str):
            raise ValueError("a service name must be a string")
        if routing_key is not None and (not isinstance(routing_key, str) or not routing_key):
            raise ValueError("a routing key must be a non-empty string")
        digest = hashlib.sha256(routing_key.encode()).hexdigest() if routing_key else None
        with self.lock:
            service = self.services.setdefault(service_id, {
                "id": service_id, "created_at": format_time(datetime.now(UTC)),
                "routing_key_hashes": []})
            service["name"] = name or service.get("name") or service_id
            if digest is not None:
                self.service_keys[digest] = service_id
                service["routing_key_hashes"].append(digest[:12])
            return copy.deepcopy(service)

    def service_for(self, routing_key_digest: str) -> tuple[str, str]:
        """(id, name) of the service of a routing key, given as its full SHA-256."""
        with self.lock:
            service = self.services[self.service_keys.get(routing_key_digest,
                                                          DEFAULT_SERVICE_ID)]
            return service["id"], service["name"]

    def set_faults(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        return apply_faults(self.faults, changes, self.lock)

    def reset(self) -> None:
        """Forget windows, subscriptions, the request log and rate windows; restore the
        faults. Tokens and services stay."""
        with self.lock:
            self.clear()
            for field in dataclasses.fields(Faults):
                setattr(self.faults, field.name, getattr(self.baseline, field.name))
        self.webhooks.forget_subscriptions()

    # Observation

    def maintenance_windows(self) -> list[dict[str, Any]]:
        """Every window not deleted, as the API shows it plus ``status``
        (future/ongoing/ended)."""
        now = datetime.now(UTC)
        with self.lock:
            return [self._window(r, now) | {"status": _window_status(r, now)}
                    for r in self._sorted_windows()]

    def webhook_subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription, as the API lists them (no secret)."""
        with self.lock:
            return [self._subscription(r) for r in self.subscriptions.values()]

    def request_log(self) -> list[dict[str, Any]]:
        """Every REST request: method, path, status (None: dropped), token_ok, token_hash
        (12 hex digits of its SHA-256), from."""
        with self.lock:
            return copy.deepcopy(self.requests)

    def service_list(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self._service(s) for s in self.services.values()]

    # Serving

    @staticmethod
    def owns(path: str) -> bool:
        """Whether `path` is one of the REST API's."""
        return path.strip("/").split("/", 1)[0] in RESOURCES

    def handle(self, method: str, target: str, headers: Mapping[str, str],
               raw: bytes) -> Answer | None:
        """The answer to one REST request (None: drop the connection)."""
        url = urlsplit(target)
        match = TOKEN_HEADER.match(headers.get("Authorization") or "")
        digest = token_hash(match.group(1)) if match else None
        sender = headers.get("From")
        time.sleep(self._latency())  # outside the lock, so slow answers overlap
        with self.lock:
            token_ok = digest is not None and any(
                hmac.compare_digest(digest, known) for known in self.tokens)
            decided, answer = self._forced(token_ok, digest)
        if not decided:
            try:
                answer = self._route(method, url.path, parse_qs(url.query), raw)
            except RestError as exc:
                answer = (exc.status, exc.body())
        with self.lock:
            self.requests.append({
                "seq": len(self.requests) + 1, "ts": time.time(), "method": method,
                "path": url.path, "status": answer[0] if answer else None,
                "token_ok": token_ok, "token_hash": digest[:12] if digest else None,
                "from": sender[:MAX_FROM_CHARS] if sender is not None else None,
            })
        return answer

    def _latency(self) -> float:
        with self.lock:
            jitter = self.faults.latency_jitter_ms * self.rng.random()
            return (self.faults.latency_ms + jitter) / 1000.0

    def _forced(self, token_ok: bool, digest: str | None) -> tuple[bool, Answer | None]:
        """(True, answer) when faults, auth or the rate limit decide; (False, None) to serve.
        Called with the lock held."""
        faults = self.faults
        if faults.drop_connections:
            return True, None
        status: int | None = None
        if faults.force_status is not None:
            status = faults.force_status
        elif faults.fail_next > 0:
            faults.fail_next -= 1
            status = faults.error_status
        elif faults.error_rate > 0 and self.rng.random() < faults.error_rate:
            status = faults.error_status
        if status is not None:
            body = copy.deepcopy(faults.error_body) if faults.error_body is not None \
                else None if status == 204 else error_body(status)
            return True, (status, body)
        if not token_ok or digest is None:
            return True, (401, error_body(401))
        if not admit(self.rate, digest, faults.rate_limit, self.clock()):
            return True, (429, error_body(429))
        return False, None

    def _route(self, method: str, path: str, query: dict[str, list[str]], raw: bytes) -> Answer:
        parts = path.strip("/").split("/")
        if len(parts) > 2 or not all(parts):
            raise RestError(404)
        resource, ident = parts[0], (parts[1] if len(parts) == 2 else None)
        body = _json(raw) if method in ("POST", "PUT") else None
        subscribe: Callable[[], None] | None = None
        if resource == "incidents" and ident is not None and method == "GET":
            return self._get_incident(ident)
        with self.lock:
            now = datetime.now(UTC)
            if resource == "services" and method == "GET":
                if ident is None:
                    return 200, paginate([self._service(s) for s in self.services.values()],
                                         "services", query)
                return 200, {"service": self._service(self._found(self.services, ident))}
            if resource == "maintenance_windows":
                return self._windows_route(method, ident, query, body, now)
            if resource == "webhook_subscriptions":
                answer, subscribe = self._subscriptions_route(method, ident, query, body)
            else:
                raise RestError(404)
        if subscribe is not None:  # the sender's lock is never taken under this one
            subscribe()
        return answer

    @staticmethod
    def _found(records: dict[str, dict[str, Any]], ident: str) -> dict[str, Any]:
        if ident not in records:
            raise RestError(404)
        return records[ident]

    def _new_id(self) -> str:
        while True:
            ident = "P" + "".join(self.rng.choice(ID_ALPHABET) for _ in range(6))
            if ident not in self.windows and ident not in self.subscriptions \
                    and ident not in self.services:
                return ident

    # Maintenance windows (called with the lock held)

    def _windows_route(self, method: str, ident: str | None, query: dict[str, list[str]],
                       body: Any, now: datetime) -> Answer:
        if ident is None and method == "GET":
            return 200, paginate([self._window(r, now) for r in self._listed(query, now)],
                                 "maintenance_windows", query)
        if ident is None and method == "POST":
            fields = window_input(body, self.services, now)
            self.sequence += 1
            record = fields | {"id": self._new_id(), "sequence_number": self.sequence,
                               "created_at": now}
            self.windows[record["id"]] = record
            return 201, {"maintenance_window": self._window(record, now)}
        if ident is None:
            raise RestError(404)
        record = self._found(self.windows, ident)
        status = _window_status(record, now)
        if method == "GET":
            return 200, {"maintenance_window": self._window(record, now)}
        if method in ("PUT", "DELETE") and status == "ended":
            raise RestError(405, [f"maintenance window {ident} has already ended"])
        if method == "PUT":
            record.update(window_input(body, self.services, now, current=record))
            return 200, {"maintenance_window": self._window(record, now)}
        if method == "DELETE":
            if status == "future":
                del self.windows[ident]
            else:
                record["end_time"] = now
            return 204, None
        raise RestError(404)

    def _sorted_windows(self) -> list[dict[str, Any]]:
        return sorted(self.windows.values(), key=lambda r: (r["start_time"],
                                                            r["sequence_number"]))

    def _listed(self, query: dict[str, list[str]], now: datetime) -> list[dict[str, Any]]:
        wanted = set(query.get("service_ids[]", []) + query.get("service_ids", []))
        state = query.get("filter", ["all"])[-1]
        text = query.get("query", [""])[-1].lower()
        chosen = []
        for record in self._sorted_windows():
            status = _window_status(record, now)
            if wanted and not wanted.intersection(record["service_ids"]):
                continue
            if state in WINDOW_FILTERS and state != "all" and not (
                    (state == "past" and status == "ended") or status == state
                    or (state == "open" and status != "ended")):
                continue
            if text and text not in record["description"].lower():
                continue
            chosen.append(record)
        return chosen

    def _window(self, record: dict[str, Any], now: datetime) -> dict[str, Any]:
        ident = record["id"]
        return {
            "id": ident, "type": "maintenance_window", "summary": record["description"],
            "self": f"{API_ORIGIN}/maintenance_windows/{ident}",
            "html_url": f"https://simulated.pagerduty.com/maintenance_windows#{ident}",
            "sequence_number": record["sequence_number"],
            "start_time": format_time(record["start_time"]),
            "end_time": format_time(record["end_time"]),
            "description": record["description"],
            "services": [service_reference(self.services[s]) for s in record["service_ids"]
                         if s in self.services],
            "teams": [], "created_by": None,
        }

    # Webhook subscriptions (called with the lock held)

    def _subscriptions_route(self, method: str, ident: str | None,
                             query: dict[str, list[str]], body: Any
                             ) -> tuple[Answer, Callable[[], None] | None]:
        if ident is None and method == "GET":
            kind = query.get("filter_type", [None])[-1]
            target = query.get("filter_id", [None])[-1]
            listed = [self._subscription(r) for r in self.subscriptions.values()
                      if (kind is None or r["filter"]["type"] == kind)
                      and (target is None or r["filter"]["id"] == target)]
            return (200, paginate(listed, "webhook_subscriptions", query)), None
        if ident is None and method == "POST":
            fields = subscription_input(body, self.services)
            record = fields | {"id": self._new_id(), "method_id": self._new_id()}
            self.subscriptions[record["id"]] = record
            secret = secrets.token_urlsafe(48)
            answer = self._subscription(record)
            answer["delivery_method"]["secret"] = secret
            events, service = frozenset(record["events"]), (
                record["filter"]["id"] if record["filter"]["type"] == "service_reference"
                else None)

            def accepts(webhook: dict[str, Any]) -> bool:
                event = webhook["event"]
                return event["event_type"] in events and (
                    service is None or event["data"]["service"]["id"] == service)

            def subscribe() -> None:
                self.webhooks.subscribe(record["id"], record["url"], secret, accepts)

            return (201, {"webhook_subscription": answer}), subscribe
        if ident is None:
            raise RestError(404)
        record = self._found(self.subscriptions, ident)
        if method == "GET":
            return (200, {"webhook_subscription": self._subscription(record)}), None
        if method == "DELETE":
            del self.subscriptions[ident]
            return (204, None), lambda: self.webhooks.unsubscribe(ident)
        raise RestError(404)

    @staticmethod
    def _subscription(record: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": record["id"], "type": "webhook_subscription", "active": True,
            "delivery_method": {"id": record["method_id"], "type": "http_delivery_method",
                                "url": record["url"], "secret": None,
                                "temporarily_disabled": False, "custom_headers": []},
            "description": record["description"], "events": list(record["events"]),
            "filter": dict(record["filter"]),
        }

    # Services and incidents

    def _service(self, service: dict[str, Any]) -> dict[str, Any]:
        """Called with the lock held."""
        now = datetime.now(UTC)
        in_maintenance = any(service["id"] in r["service_ids"]
                             and _window_status(r, now) == "ongoing"
                             for r in self.windows.values())
        return service_reference(service) | {
            "type": "service", "name": service["name"], "description": service["name"],
            "status": "maintenance" if in_maintenance else "active",
            "created_at": service["created_at"], "alert_creation":
            "create_alerts_and_incidents", "teams": [], "integrations": [],
            "escalation_policy": {"id": "PSIMESC", "type": "escalation_policy_reference",
                                  "summary": "Simulated escalation policy"},
        }

    def _get_incident(self, ident: str) -> Answer:
        """Called without the lock: the Events API's records have a lock of their own."""
        incident = self._incident(ident)
        if incident is None:
            raise RestError(404)
        with self.lock:
            service = self.services.get(incident.get("service_id", DEFAULT_SERVICE_ID))
        reference = service_reference(service) if service else {
            "id": incident.get("service_id"), "type": "service_reference",
            "summary": incident.get("service_name")}
        title = incident.get("summary", "")
        return 200, {"incident": {
            "id": incident["id"], "type": "incident",
            "summary": f"[#{incident['number']}] {title}",
            "self": f"{API_ORIGIN}/incidents/{incident['id']}",
            "html_url": f"https://simulated.pagerduty.com/incidents/{incident['id']}",
            "incident_number": incident["number"], "title": title,
            "status": incident["status"], "incident_key": incident["dedup_key"],
            "urgency": "high" if incident.get("severity") in ("critical", "error") else "low",
            "service": reference, "created_at": incident.get("created_at"),
            "assignments": [], "acknowledgements": [], "teams": [],
        }}


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError):
        raise RestError(400, ["the body must be JSON"]) from None


def control(rest: RestState, method: str, path: str, raw: bytes) -> Answer | None:
    """The ``/_sim/rest/...`` and ``/_sim/webhooks`` control answers (None: not one)."""
    name = path.removeprefix("/_sim/rest/") if path.startswith("/_sim/rest/") else None
    try:
        if path == "/_sim/webhooks":
            if method == "POST":
                include = _object(raw).get("include_incident_key")
                if not isinstance(include, bool):
                    raise ValueError("'include_incident_key' must be a boolean")
                rest.webhooks.include_incident_key = include
            return 200, {"include_incident_key": rest.webhooks.include_incident_key,
                         "deliveries": rest.webhooks.snapshot()}
        if method == "GET" and name in ("maintenance_windows", "webhook_subscriptions",
                                        "requests", "services"):
            views: dict[str, Callable[[], list[dict[str, Any]]]] = {
                "maintenance_windows": rest.maintenance_windows,
                "webhook_subscriptions": rest.webhook_subscriptions,
                "requests": rest.request_log, "services": rest.service_list}
            return 200, views[name]()
        if name == "faults":
            return 200, rest.set_faults(_object(raw) if method == "POST" else {})
        if method == "POST" and name == "tokens":
            rest.add_token(_object(raw).get("token"))  # type: ignore[arg-type]
            return 200, {"ok": True}
        if method == "POST" and name == "services":
            fields = _object(raw)
            return 200, rest.add_service(fields.get("id"),  # type: ignore[arg-type]
                                         fields.get("name"), fields.get("routing_key"))
    except ValueError as exc:
        return 400, {"ok": False, "errors": [str(exc)]}
    return None


def _object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise ValueError("body must be a JSON object")
    return value
