"""Request and response bodies of the HTTP API: the schemas of its OpenAPI document.

They describe what the shared functions return (`worker/`, `producer/`): a handler
returns those records and FastAPI checks them against these models. The alert event
itself is `producer.event.AlertEvent`, validated by the producer as `send()` does.

A destination is shown as the registry's own records (`config.registry.DestinationRecord`,
`DestinationDetail`, `DestinationPage`, `Removal`, which `monitao-pd destinations ... --json`
prints too). Its request bodies are built here from the registry's settings and the
`Destination` model's schema, so a new setting appears in both at once; their fields are
documented, not checked: the registry validates them, in the CLI's words.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from config import defaults
from config.destinations import NAME_PATTERN, ROUTING_KEY_LENGTH, Destination
from config.registry import SETTINGS

EVENT_ID = "4b1f0f6c2a6e4d0e9f1d2c3b4a596877"
INCIDENT = "456"
DEDUP_KEY = "monitao-monitor-123-incident-456"
TS = "2026-11-27T14:10:03.686+00:00"
WINDOW = {
    "id": "db-upgrade", "destination": "prod", "monitors": [],
    "start": "2026-12-01T02:00:00Z", "end": "2026-12-01T04:00:00Z", "weekly": None,
    "mode": "suppress", "reason": "db upgrade", "origin": "runtime", "sync": "synced",
    "when": "2026-12-01T02:00:00+00:00 to 2026-12-01T04:00:00+00:00",
    "active_until": None, "holding": 0, "pagerduty_window_id": "PW4Q2ZB"}


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class Problem(BaseModel):
    """An error (RFC 9457), with one `field: reason` line per problem."""

    model_config = _examples({
        "type": "about:blank", "title": "Invalid input", "status": 422,
        "detail": "invalid event", "problems": ["summary: required for a trigger"]})

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    problems: list[str]


class EventAccepted(BaseModel):
    """The event is stored in Redis: it will end in exactly one final state."""

    model_config = _examples({"event_id": EVENT_ID})

    event_id: str


class BatchAccepted(BaseModel):
    """Every event of the batch is stored, in the order given."""

    model_config = _examples({"event_ids": [EVENT_ID, "9c0d7e41f3b24a77a0e5b1c2d3e4f506"]})

    event_ids: list[str]


class TimelineEntry(BaseModel):
    """One stage of one event; stage-specific fields (http_status, latency_ms, reason,
    errors, retry_at, operator, ...) are present where they apply."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "ts": TS, "id": "1795788603686-0", "stage": "attempt", "event_id": EVENT_ID,
        "action": "trigger", "destination": "prod", "dedup_key": DEDUP_KEY, "attempt": 1,
        "http_status": 202, "latency_ms": 6.7, "worker": "host:11213"}]})

    ts: str
    id: str
    stage: str | None = None
    event_id: str | None = None
    action: str | None = None
    destination: str | None = None
    dedup_key: str | None = None


FIGURES_EXAMPLE: dict[str, Any] = {
    "events": 2, "states": {"delivered": 2}, "attempts": 2, "retries_scheduled": 0,
    "rate_limited": 0, "replayed": 0, "first_enqueued": TS, "enqueue_to_first_delivery_ms": 445,
    "trigger_to_resolve_ms": 393}


class Figures(BaseModel):
    """What a timeline's events add up to: one key's, or a whole incident's."""

    events: int
    states: dict[str, int]
    attempts: int
    retries_scheduled: int
    rate_limited: int
    replayed: int
    first_enqueued: str | None
    enqueue_to_first_delivery_ms: int | None
    trigger_to_resolve_ms: int | None


class KeyFigures(Figures):
    """The derived figures of one (destination, dedup_key) of an incident."""

    model_config = _examples({"destination": "prod", "dedup_key": DEDUP_KEY,
                              **FIGURES_EXAMPLE})

    destination: str
    dedup_key: str


class TimelineSummary(Figures):
    """What `monitao-pd timeline --summary --json` prints."""

    model_config = _examples({"incident_id": INCIDENT, "entries": 6, **FIGURES_EXAMPLE,
                              "keys": []})

    incident_id: str
    entries: int
    keys: list[KeyFigures]


class TimelinePage(BaseModel):
    """A page of an incident's timeline, oldest first. `summary` covers the whole timeline
    and comes with the first page only; `next_cursor` is null on the last page."""

    model_config = _examples({"incident_id": INCIDENT, "entries": [], "summary": None,
                              "next_cursor": None})

    incident_id: str
    entries: list[TimelineEntry]
    summary: TimelineSummary | None
    next_cursor: str | None


class DeadLetter(BaseModel):
    """One dead letter, as `monitao-pd dlq list --json` shows it."""

    model_config = _examples({
        "event_id": EVENT_ID, "destination": "prod", "dedup_key": DEDUP_KEY,
        "incident_id": INCIDENT, "action": "trigger", "state": "dead_lettered",
        "reason": "rejected", "error": "HTTP 400: Event object is invalid",
        "errors": ["'links' must be an array"], "attempts": 1, "replays": 0,
        "first_seen": TS, "last_attempt": TS, "dead_lettered_at": TS})

    event_id: str
    destination: str
    dedup_key: str
    incident_id: str | None
    action: str | None
    state: str
    reason: str
    error: str | None
    errors: list[Any]
    attempts: int
    replays: int
    first_seen: str | None
    last_attempt: str | None
    dead_lettered_at: str | None


class DeadLetterPage(BaseModel):
    """A page of dead letters, oldest first; `next_cursor` is null on the last page."""

    model_config = _examples({"dead_letters": [], "next_cursor": None})

    dead_letters: list[DeadLetter]
    next_cursor: str | None


class DeadLetterDetail(DeadLetter):
    """`monitao-pd dlq show --json`: the stored event, the body as it is sent (routing key
    masked), every attempt and the event's timeline; `raw` for what could not be decoded."""

    model_config = _examples({
        "event_id": EVENT_ID, "destination": "prod", "dedup_key": DEDUP_KEY,
        "incident_id": INCIDENT, "action": "trigger", "state": "dead_lettered",
        "reason": "rejected", "error": "HTTP 400: Event object is invalid", "errors": [],
        "attempts": 1, "replays": 0, "first_seen": TS, "last_attempt": TS,
        "dead_lettered_at": TS, "origin": None, "raw": None,
        "event": {"action": "trigger"}, "body": {"routing_key": "********"},
        "body_note": "rebuilt from the stored event and the current configuration; "
                     "routing key masked", "attempt_history": [], "timeline": []})

    origin: str | None
    raw: str | None
    event: Any
    body: dict[str, Any] | None
    body_note: str
    attempt_history: list[TimelineEntry]
    timeline: list[TimelineEntry]


class ReasonCounts(BaseModel):
    """Dead letters (not counting replays on their way) per reason, most first."""

    model_config = _examples({"counts": {"rejected": 10, "expired": 2}, "total": 12})

    counts: dict[str, int]
    total: int


class ReplayRequest(BaseModel):
    """Which dead letters to replay: `event_ids` (full ids or unique prefixes of 8+
    characters), or filters, or `all`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={
        "examples": [{"event_ids": [EVENT_ID]},
                     {"reason": "rejected", "since": "2026-11-27T00:00:00Z", "dry_run": True}]})

    event_ids: list[str] = Field(default_factory=list, max_length=defaults.API_PAGE_MAX)
    destination: str | None = None
    reason: str | None = None
    since: datetime | None = Field(None, description="dead-lettered at or after")
    until: datetime | None = Field(None, description="dead-lettered at or before")
    everything: bool = Field(False, alias="all", description="every dead letter")
    dry_run: bool = Field(False, description="decide and answer, change nothing")
    force: bool = Field(False, description="replay even when superseded or history expired")


class ReplayDecision(BaseModel):
    """What the replay did (or would do) with one event, and why (the `replay` table)."""

    model_config = _examples({
        "event_id": EVENT_ID, "outcome": "superseded", "reason": "superseded",
        "detail": "a later event of its key (9c0d7e41f3b2, resolve) was delivered at " + TS,
        "destination": "prod", "dedup_key": DEDUP_KEY, "incident_id": INCIDENT,
        "action": "trigger", "later_pending": []})

    event_id: str
    outcome: str = Field(description="queued, superseded, skipped, unknown; dry run: "
                                     "would_queue, would_supersede")
    reason: str
    detail: str
    destination: str
    dedup_key: str
    incident_id: str
    action: str
    later_pending: list[str]


class ReplayResult(BaseModel):
    """Every decision, how many of each outcome, and how many were refused (skipped for a
    reason other than a replay already on its way)."""

    model_config = _examples({
        "dry_run": False, "tally": {"queued": 1}, "refused": 0,
        "decisions": [{"event_id": EVENT_ID, "outcome": "queued", "reason": "",
                       "detail": "queued at the tail of its key", "destination": "prod",
                       "dedup_key": DEDUP_KEY, "incident_id": INCIDENT, "action": "trigger",
                       "later_pending": []}]})

    dry_run: bool
    decisions: list[ReplayDecision]
    tally: dict[str, int]
    refused: int


class Purged(BaseModel):
    """The dead letter was purged: it keeps its record (state `purged`) for the event
    retention, so a resend of its id stays a no-op."""

    model_config = _examples({"event_id": EVENT_ID, "state": "purged"})

    event_id: str
    state: Literal["purged"] = "purged"


class SendTestStep(BaseModel):
    """One event of a send test."""

    model_config = _examples({
        "action": "trigger", "event_id": EVENT_ID, "state": "dead_lettered", "ok": False,
        "attempts": 1, "http_status": 400, "attempt_latency_ms": 5.2, "latency_ms": 80.0,
        "error": "HTTP 400: Event object is invalid", "reason": "rejected",
        "errors": ["'routing_key' is invalid"]})

    action: Literal["trigger", "resolve"]
    event_id: str
    state: str = Field(description="delivered, dead_lettered, pending (not final in time)")
    ok: bool
    attempts: int
    http_status: int | None
    attempt_latency_ms: float | None
    latency_ms: float | None = Field(description="from enqueue to the final state")
    error: str | None
    reason: str | None
    errors: list[str] = Field(description="PagerDuty's errors, when it refused the event")


class SendTestResult(BaseModel):
    """A test trigger and its resolve through the fleet, each step's outcome."""

    model_config = _examples({
        "destination": "prod", "incident_id": "test-20261127T141003-a1b2c3", "ok": True,
        "results": [{"action": "trigger", "event_id": EVENT_ID, "state": "delivered",
                     "ok": True, "attempts": 1, "http_status": 202,
                     "attempt_latency_ms": 6.7, "latency_ms": 120.0, "error": None,
                     "reason": None, "errors": []}]})

    destination: str
    incident_id: str
    ok: bool
    results: list[SendTestStep]


class MaintenanceWindowIn(BaseModel):
    """A run-time maintenance window: one-off (`start`, `end`) or weekly."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"destination": "prod", "monitors": ["123"], "start": "2026-12-01T02:00:00Z",
         "end": "2026-12-01T04:00:00Z", "mode": "suppress", "reason": "db upgrade"},
        {"destination": "prod", "weekly": "sun 02:00-04:00", "mode": "hold"}]})

    destination: str
    monitors: list[str] = Field(default_factory=list)
    start: str | None = Field(None, description="ISO 8601 (UTC without an offset)")
    end: str | None = Field(None, description="ISO 8601")
    weekly: str | None = Field(None, description='e.g. "sun 02:00-04:00" (UTC)')
    mode: str = Field("suppress", description="suppress or hold")
    reason: str = ""
    id: str | None = Field(None, description="an id of your own (default: generated); "
                                             "an existing run-time window's id replaces it")
    sync: bool = Field(True, description="also create it on the destination's PagerDuty "
                                         "service (a window of the whole destination with "
                                         "REST credentials); false keeps it on MoniTao's side")


class MaintenanceWindowOut(BaseModel):
    """A window as `monitao-pd maintenance list --json` shows it."""

    model_config = _examples(WINDOW)

    id: str
    destination: str
    monitors: list[str]
    start: str | None
    end: str | None
    weekly: str | None
    mode: str
    reason: str
    origin: str
    when: str
    active_until: str | None
    holding: int | None
    sync: str | None = Field(description="how it stands with PagerDuty: synced, pending, "
                                         "'failed: why', 'not synced: why', or null when the "
                                         "destination has no PagerDuty REST credentials")
    pagerduty_window_id: str | None = Field(description="the PagerDuty window it is synced "
                                                        "to (the current or next occurrence "
                                                        "of a weekly window)")


class MaintenanceWindows(BaseModel):
    """Every window, configured then run-time."""

    model_config = _examples({"windows": []})

    windows: list[MaintenanceWindowOut]


class MaintenanceWindowAdded(BaseModel):
    """The stored window, and how many keys a window it replaced held (now woken)."""

    model_config = _examples({"window": WINDOW, "woken": 0})

    window: MaintenanceWindowOut
    woken: int


class MaintenanceWindowRemoved(BaseModel):
    """The window is gone; the keys it held are due now."""

    model_config = _examples({"id": "db-upgrade", "woken": 3})

    id: str
    woken: int


class DestinationState(BaseModel):
    """One destination's admission state."""

    model_config = _examples({
        "name": "prod", "pending_events": 3, "cooling_down": False,
        "cooldown_remaining_seconds": 0.0, "rate_waiting_keys": 0, "rate_window_requests": 12,
        "rate_limit_per_minute": 100, "circuit": "closed", "circuit_failures": 0})

    name: str
    pending_events: int
    cooling_down: bool
    cooldown_remaining_seconds: float
    rate_waiting_keys: int
    rate_window_requests: int
    rate_limit_per_minute: int | None
    circuit: str
    circuit_failures: int


class RestCredentialsCheck(BaseModel):
    """One destination's REST credentials checked (`GET /services/{id}` at PagerDuty)."""

    model_config = _examples({"service_id": "PABC123", "ok": False,
                              "problem": "GET /services/PABC123: HTTP 401, the API token is "
                                         "not valid (or is for another region): Unauthorized",
                              "unreachable": False, "checked_at": 1795788603.686})

    service_id: str
    ok: bool
    problem: str | None
    unreachable: bool = Field(description="no answer from PagerDuty (not a configuration "
                                          "error)")
    checked_at: float = Field(description="Unix time of the check")


class MaintenanceSyncSummary(BaseModel):
    """Maintenance windows on PagerDuty: how many are synced, pending and failed, and the
    first failure's reason."""

    model_config = _examples({"synced": 3, "pending": 0, "failed": 1,
                              "first_failure": "window db-upgrade (prod): POST "
                                               "/maintenance_windows: HTTP 401, the API token "
                                               "is not valid (or is for another region)"})

    synced: int
    pending: int
    failed: int
    first_failure: str | None


class FleetStatus(BaseModel):
    """What `monitao-pd status --json` prints."""

    model_config = _examples({
        "now_ms": 1795788603686, "scheduled_keys": 0, "due_keys": 0, "in_flight": 0,
        "backing_off": 0, "pending_events": 0, "oldest_pending_ms": None,
        "oldest_pending_event": None, "dead_letters": {}, "replays_pending": 0,
        "queue_length": 0, "destinations": {}, "oldest_pending_age_seconds": None,
        "dead_letters_total": 0, "destinations_waiting": [], "workers": ["celery@host"],
        "workers_error": None, "max_pending_age_seconds": 600.0,
        "healthy": True, "verdict": "nothing pending",
        "maintenance_sync": {"synced": 2, "pending": 0, "failed": 0, "first_failure": None}})

    now_ms: int
    scheduled_keys: int
    due_keys: int
    in_flight: int
    backing_off: int
    pending_events: int
    oldest_pending_ms: int | None
    oldest_pending_event: str | None
    dead_letters: dict[str, int]
    replays_pending: int
    queue_length: int | None
    destinations: dict[str, DestinationState]
    oldest_pending_age_seconds: float | None
    dead_letters_total: int
    destinations_waiting: list[str]
    workers: list[str] | None
    workers_error: str | None
    max_pending_age_seconds: float
    rest_credentials: dict[str, RestCredentialsCheck] = Field(
        default_factory=dict, description="destinations with PagerDuty REST credentials: "
        "the last check of each (a GET of its service, redone when 5 minutes old)")
    rest_summary: str | None = Field(None, description="those checks in one line")
    healthy: bool
    verdict: str
    maintenance_sync: MaintenanceSyncSummary | None = None


class Health(BaseModel):
    """Liveness: this replica answers and reaches Redis. No detail."""

    model_config = _examples({"status": "ok"})

    status: Literal["ok", "unavailable"]


# --- destinations ---------------------------------------------------------------------------

# What the document says of each setting (a setting without a line here is still accepted).
SETTING_DESCRIPTIONS = {
    "region": "us or eu: the Events API host (events_url overrides it)",
    "events_url": "an explicit Events API URL (a proxy, the simulator)",
    "source": "the payload's source",
    "client": "the client name shown in PagerDuty",
    "client_url": "the link shown in PagerDuty",
    "rate_limit_per_minute": "events per minute for this routing key, fleet-wide",
    "severity_map": "MoniTao level -> PagerDuty severity",
    "coalesce": "alert-storm coalescing",
    "account": "the MoniTao customer it belongs to (a label for listing and metrics)",
    "pagerduty_service_id": "PagerDuty service id for PagerDuty's REST API (maintenance "
                            "windows synchronised, webhook subscriptions, incident lookups); "
                            "needs `pagerduty_api_token`; null drops the REST credentials",
    "pagerduty_from": "the From email PagerDuty requires with an account-level API token",
    "pagerduty_api_url": "the REST API's base URL (default: the region's, "
                         "https://api.pagerduty.com or https://api.eu.pagerduty.com)",
}
API_TOKEN_SCHEMA = {
    "type": "string", "minLength": 8, "maxLength": 200, "writeOnly": True,
    "description": "PagerDuty REST API token (with `pagerduty_service_id`): write-only, "
                   "sealed like the routing key, never returned; responses describe it"}
ROUTING_KEY_SCHEMA = {
    "type": "string", "pattern": f"^[A-Za-z0-9]{{{ROUTING_KEY_LENGTH}}}$", "writeOnly": True,
    "description": "the PagerDuty routing key (integration key): write-only, never returned; "
                   "responses describe it (length, sha256 fingerprint, key id)"}
NEW_EXAMPLE = {"name": "acme-prod", "routing_key": "R0UT1NGKEY0F32LETTERSANDD1G1TS00",
               "region": "eu", "account": "acme", "rate_limit_per_minute": 120,
               "severity_map": {"critical": "critical", "minor": "warning"}}


def _setting_schemas(*, for_changes: bool) -> dict[str, dict[str, Any]]:
    """Each run-time setting's JSON schema as the `Destination` model validates it. For a
    change (a JSON merge patch): no defaults (what is not given stays), and a null severity
    removes that level."""
    properties = Destination.model_json_schema()["properties"]
    schemas = {}
    for name in SETTINGS:
        schema = copy.deepcopy(properties[name])
        schema.pop("title", None)
        if name in SETTING_DESCRIPTIONS:
            schema["description"] = SETTING_DESCRIPTIONS[name]
        if for_changes:
            schema.pop("default", None)
            if name == "severity_map":
                schema["additionalProperties"] = {
                    "anyOf": [schema["additionalProperties"], {"type": "null"}]}
        schemas[name] = schema
    return schemas


def _documented_as(properties: dict[str, dict[str, Any]], required: list[str],
                   examples: list[dict[str, Any]]) -> ConfigDict:
    """A request body documented by `properties` and taken as given: every field reaches the
    registry, which checks them all (unknown ones too) and answers in the CLI's words."""

    def document(schema: dict[str, Any]) -> None:
        schema["properties"] = copy.deepcopy(properties)
        schema["examples"] = copy.deepcopy(examples)
        if required:
            schema["required"] = required

    return ConfigDict(extra="allow", json_schema_extra=document)


def _body(name: str, doc: str, properties: dict[str, dict[str, Any]], required: list[str],
          examples: list[dict[str, Any]]) -> type[BaseModel]:
    return create_model(name, __doc__=doc,
                        __config__=_documented_as(properties, required, examples),
                        **{field: (Any, None) for field in properties})


NewDestination = _body(
    "NewDestination",
    "A run-time destination to add: its name, routing key and settings (what is not given "
    "takes its default). Invalid input: 422, one `field: reason` per problem, nothing stored.",
    {"name": {"type": "string", "pattern": NAME_PATTERN.pattern,
              "description": "unique across the destinations file and the registry"},
     "routing_key": ROUTING_KEY_SCHEMA, "pagerduty_api_token": API_TOKEN_SCHEMA,
     **_setting_schemas(for_changes=False)},
    ["name", "routing_key"], [NEW_EXAMPLE])

DestinationChanges = _body(
    "DestinationChanges",
    "What changes of a run-time destination (a JSON merge patch): a given setting replaces "
    "the stored one, `severity_map` merges into the stored map (a null severity removes that "
    "level), null clears `events_url`, `client_url` or `account`; a new `routing_key` "
    "replaces the key. What is not given stays.",
    {"routing_key": ROUTING_KEY_SCHEMA, "pagerduty_api_token": API_TOKEN_SCHEMA,
     **_setting_schemas(for_changes=True)}, [],
    [{"routing_key": "N3WR0UT1NGKEY0F32LETTERSANDD1G1T"},
     {"pagerduty_service_id": "PABC123", "pagerduty_api_token": "y_NbAkKc66ryYTWUXYEu",
      "pagerduty_from": "ops@example.com"},
     {"severity_map": {"minor": None, "major": "error"}, "account": None}])
