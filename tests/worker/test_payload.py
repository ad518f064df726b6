"""The Events API v2 body built from one alert event, checked against PagerDuty's schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7

from config.destinations import Destination
from producer.event import AlertEvent, parse_event
from worker.payload import MAX_BODY_BYTES, SEED_FIELDS, body_size, build_event, truncate

KEY = "R" * 32
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "data" / "events-v2.openapi.json"
SCHEMA_URI = "urn:pagerduty:events-v2"
ENQUEUE_SCHEMA = "/paths/~1enqueue/post/requestBody/content/application~1json/schema"
WHEN = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
INCIDENT_URL = "https://app.monitao.com/incidents/456"

DROPPED_NOTE = "details dropped: the event exceeded PagerDuty's 512 KB limit"


@pytest.fixture(scope="module")
def schema() -> Draft7Validator:
    """PagerDuty's schema of a /v2/enqueue body, refs resolved against the whole document."""
    document = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # The path the fixture resolves is the one the brief names.
    assert document["paths"]["/enqueue"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["required"] == ["routing_key", "event_action"]
    registry = Registry().with_resource(SCHEMA_URI, DRAFT7.create_resource(document))
    return Draft7Validator(
        {"$ref": f"{SCHEMA_URI}#{ENQUEUE_SCHEMA}"},
        registry=registry,
        format_checker=Draft7Validator.FORMAT_CHECKER,
    )


def destination(**fields: Any) -> Destination:
    return Destination(name="prod", routing_key=KEY, **fields)


def event(**fields: Any) -> AlertEvent:
    data: dict[str, Any] = {
        "event_id": "evt-1",
        "action": "trigger",
        "monitor_id": "123",
        "incident_id": "456",
        "summary": "[DOWN] example.com - HTTP 503",
        "occurred_at": WHEN,
    }
    data.update(fields)
    return parse_event({k: v for k, v in data.items() if v is not ...})


FULL = {
    "level": "critical",
    "monitor_name": "example.com",
    "url": "https://example.com/",
    "status_code": 503,
    "response_time_ms": 1234.5,
    "check_location": "eu-west-1",
    "incident_url": INCIDENT_URL,
}

TRIGGERS: dict[str, tuple[AlertEvent, Destination]] = {
    "minimal": (event(), destination()),
    "full": (event(**FULL, details={"region": "eu", "attempts": [1, 2]}), destination()),
    "eu-custom-source": (
        event(level="minor", monitor_name="api"),
        destination(region="eu", source="monitao-eu", client="MoniTao EU"),
    ),
    "destination-client-url": (
        event(level="info"), destination(client_url="https://app.monitao.com/")
    ),
    "custom-map": (
        event(level="p1", check_location="us-east"),
        destination(severity_map={"p1": "critical", "p3": "info"}),
    ),
    "long-summary": (event(summary="S" * 5000, **FULL), destination()),
    "unicode": (
        event(summary="[DOWN] caf\u00e9.example \u2603", details={"note": "\u00e9\u00e8"}),
        destination(),
    ),
    "longest-ids": (event(monitor_id="m" * 100, incident_id="i" * 100), destination()),
}


def all_values(node: Any) -> list[Any]:
    """Every value in a JSON-like structure, recursively."""
    if isinstance(node, dict):
        return [v for value in node.values() for v in [value, *all_values(value)]]
    if isinstance(node, list):
        return [v for value in node for v in [value, *all_values(value)]]
    return []


# --- schema ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TRIGGERS))
def test_trigger_validates_against_pagerduty_schema(name: str, schema: Draft7Validator) -> None:
    alert, dest = TRIGGERS[name]
    body = build_event(alert, dest)
    errors = [e.message for e in schema.iter_errors(body)]
    assert errors == []
    # What the OpenAPI document does not say but PagerDuty's documentation does.
    assert len(body["payload"]["summary"]) <= 1024
    assert len(body["dedup_key"]) <= 255
    assert body_size(body) <= MAX_BODY_BYTES
    assert body["payload"]["severity"] in {"critical", "error", "warning", "info"}
    assert datetime.fromisoformat(body["payload"]["timestamp"]) == alert.occurred_at
    assert None not in all_values(body)
    # The body is what httpx sends: it must be plain JSON.
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_follow_up_validates_against_pagerduty_schema(
    action: str, schema: Draft7Validator
) -> None:
    body = build_event(event(action=action, summary=...), destination())
    assert [e.message for e in schema.iter_errors(body)] == []


@pytest.mark.parametrize(
    ("mutation", "field"),
    [
        (lambda b: b["payload"].pop("summary"), "summary"),
        (lambda b: b["payload"].update(severity="high"), "high"),
        (lambda b: b.pop("routing_key"), "routing_key"),
        (lambda b: b.update(event_action="fire"), "fire"),
    ],
    ids=["no-summary", "bad-severity", "no-routing-key", "bad-action"],
)
def test_schema_is_not_vacuous(mutation: Any, field: str, schema: Draft7Validator) -> None:
    """The validator does refuse broken bodies, so the passing tests above mean something."""
    body = build_event(*TRIGGERS["full"])
    mutation(body)
    messages = [e.message for e in schema.iter_errors(body)]
    assert messages
    assert any(field in m for m in messages)


# --- trigger fields --------------------------------------------------------------------------


def test_trigger_body_fields() -> None:
    alert, dest = TRIGGERS["full"]
    body = build_event(alert, dest)
    assert body["routing_key"] == KEY
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == "monitao-monitor-123-incident-456"
    payload = body["payload"]
    assert payload["summary"] == "[DOWN] example.com - HTTP 503"
    assert payload["source"] == "MoniTao"
    assert payload["severity"] == "critical"
    assert payload["timestamp"] == "2024-05-01T12:30:00+00:00"
    assert payload["component"] == "example.com"
    assert payload["group"] == "eu-west-1"
    assert isinstance(payload["custom_details"], dict)
    assert body["client"] == "MoniTao"
    assert body["client_url"] == INCIDENT_URL
    assert body["links"] == [{"href": INCIDENT_URL, "text": "MoniTao incident"}]
    assert set(body) == {
        "routing_key", "event_action", "dedup_key", "payload", "client", "client_url", "links",
    }


def test_destination_source_client_and_url() -> None:
    body = build_event(*TRIGGERS["eu-custom-source"])
    assert body["payload"]["source"] == "monitao-eu"
    assert body["client"] == "MoniTao EU"
    assert body["payload"]["severity"] == "warning"


def test_destination_client_url_used_without_incident_url() -> None:
    body = build_event(*TRIGGERS["destination-client-url"])
    assert body["client_url"] == "https://app.monitao.com/"
    assert "links" not in body


def test_incident_url_wins_over_destination_client_url() -> None:
    body = build_event(
        event(incident_url=INCIDENT_URL), destination(client_url="https://app.monitao.com/")
    )
    assert body["client_url"] == INCIDENT_URL


def test_timestamp_keeps_event_offset() -> None:
    body = build_event(event(occurred_at="2024-05-01T14:30:00+02:00"), destination())
    assert body["payload"]["timestamp"] == "2024-05-01T14:30:00+02:00"


# --- summary ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "expected_length", "cut"),
    [(1, 1, False), (1023, 1023, False), (1024, 1024, False), (1025, 1024, True),
     (5000, 1024, True)],
)
def test_summary_truncated_to_1024(length: int, expected_length: int, cut: bool) -> None:
    original = ("[DOWN] " + "x" * length)[:length]
    summary = build_event(event(summary=original), destination())["payload"]["summary"]
    assert len(summary) == expected_length
    if cut:
        assert summary.endswith("...")
        assert summary == original[:1021] + "..."
    else:
        assert summary == original


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("abcdef", 6, "abcdef"), ("abcdefg", 6, "abc..."), ("", 3, ""), ("abcd", 3, "...")],
)
def test_truncate(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected


# --- severity --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "severity_map", "severity"),
    [
        ("critical", None, "critical"),
        ("major", None, "error"),
        ("minor", None, "warning"),
        ("info", None, "info"),
        ("major", {"major": "error", "p1": "critical"}, "error"),
        ("p1", {"major": "error", "p1": "critical"}, "critical"),
        ("critical", {"critical": "warning"}, "warning"),
    ],
)
def test_severity_through_map(level: str, severity_map: dict[str, str] | None,
                              severity: str) -> None:
    dest = destination(severity_map=severity_map) if severity_map else destination()
    assert build_event(event(level=level), dest)["payload"]["severity"] == severity


@pytest.mark.parametrize(
    ("level", "severity_map"),
    [("p2", None), ("major", {"p1": "critical"})],
)
def test_level_not_in_map_raises_key_error(level: str,
                                           severity_map: dict[str, str] | None) -> None:
    dest = destination(severity_map=severity_map) if severity_map else destination()
    with pytest.raises(KeyError):
        build_event(event(level=level), dest)


# --- acknowledge and resolve -----------------------------------------------------------------


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
@pytest.mark.parametrize("fields", [{}, {**FULL, "summary": "[UP] example.com"}],
                         ids=["bare", "full"])
def test_follow_up_carries_only_routing_key_action_dedup_key(
    action: str, fields: dict[str, Any]
) -> None:
    alert = event(action=action, **{"summary": ..., **fields})
    body = build_event(alert, destination(client_url="https://app.monitao.com/"))
    assert body == {
        "routing_key": KEY,
        "event_action": action,
        "dedup_key": "monitao-monitor-123-incident-456",
    }


def test_follow_up_ignores_level_mapping() -> None:
    """A resolve needs no severity, so an unmapped level does not stop it."""
    body = build_event(event(action="resolve", summary=..., level="p9"), destination())
    assert body["event_action"] == "resolve"


def test_trigger_and_resolve_share_dedup_key() -> None:
    triggered = build_event(event(), destination())
    resolved = build_event(event(action="resolve", summary=...), destination())
    assert triggered["dedup_key"] == resolved["dedup_key"]
    assert triggered["routing_key"] == resolved["routing_key"]


# --- optional fields -------------------------------------------------------------------------


def test_missing_optional_fields_leave_no_keys_and_no_none() -> None:
    body = build_event(event(), destination())
    assert "component" not in body["payload"]
    assert "group" not in body["payload"]
    assert "links" not in body
    assert "client_url" not in body
    assert body["client"] == "MoniTao"
    assert None not in all_values(body)
    assert set(body["payload"]["custom_details"]) == {"monitor_id", "incident_id"}


@pytest.mark.parametrize(
    ("missing", "absent_keys"),
    [
        ("monitor_name", {("payload", "component")}),
        ("check_location", {("payload", "group")}),
        ("incident_url", {("links",), ("client_url",)}),
    ],
)
def test_each_missing_optional_field(missing: str, absent_keys: set[tuple[str, ...]]) -> None:
    fields = {k: v for k, v in FULL.items() if k != missing}
    body = build_event(event(**fields), destination())
    for path in absent_keys:
        container = body["payload"] if path[0] == "payload" else body
        assert path[-1] not in container
    assert missing not in body["payload"]["custom_details"]
    assert None not in all_values(body)


# --- custom details --------------------------------------------------------------------------


def test_custom_details_has_seed_fields_and_details() -> None:
    alert = event(**FULL, details={"region": "eu", "attempts": [1, 2]})
    details = build_event(alert, destination())["payload"]["custom_details"]
    for name in SEED_FIELDS:
        assert details[name] == FULL[name]
    assert details["region"] == "eu"
    assert details["attempts"] == [1, 2]
    assert details["monitor_id"] == "123"
    assert details["incident_id"] == "456"


@pytest.mark.parametrize("name", [*SEED_FIELDS, "monitor_id", "incident_id"])
def test_seed_fields_win_over_details(name: str) -> None:
    alert = event(**FULL, details={name: "from details", "other": 1})
    details = build_event(alert, destination())["payload"]["custom_details"]
    assert details[name] != "from details"
    assert details[name] == {**FULL, "monitor_id": "123", "incident_id": "456"}[name]
    assert details["other"] == 1


def test_building_does_not_change_event_details() -> None:
    alert = event(**FULL, details={"monitor_name": "mine"})
    build_event(alert, destination())
    assert alert.details == {"monitor_name": "mine"}


# --- 512 KB body limit -----------------------------------------------------------------------


def oversized(blob_length: int, **fields: Any) -> AlertEvent:
    """An event whose details bypass the producer's 64 KiB bound (as a tampered record would)."""
    valid = event(**FULL, **fields)
    return AlertEvent.model_construct(
        **{**valid.__dict__, "details": {"blob": "x" * blob_length}}
    )


@pytest.mark.parametrize("blob_length", [520_000, 2_000_000])
def test_oversized_body_drops_custom_details(blob_length: int, schema: Draft7Validator) -> None:
    body = build_event(oversized(blob_length), destination())
    assert body["payload"]["custom_details"] == {
        "monitor_id": "123",
        "incident_id": "456",
        "note": DROPPED_NOTE,
    }
    assert body_size(body) <= MAX_BODY_BYTES
    # Everything else survives.
    assert body["payload"]["summary"] == "[DOWN] example.com - HTTP 503"
    assert body["links"] == [{"href": INCIDENT_URL, "text": "MoniTao incident"}]
    assert [e.message for e in schema.iter_errors(body)] == []


def test_body_limit_boundary() -> None:
    """A body of exactly 512,000 bytes keeps its details; one byte more drops them."""
    probe = build_event(oversized(1000), destination())
    exact = 1000 + MAX_BODY_BYTES - body_size(probe)
    kept = build_event(oversized(exact), destination())
    assert body_size(kept) == MAX_BODY_BYTES
    assert kept["payload"]["custom_details"]["blob"] == "x" * exact
    dropped = build_event(oversized(exact + 1), destination())
    assert "blob" not in dropped["payload"]["custom_details"]
    assert dropped["payload"]["custom_details"]["note"] == DROPPED_NOTE


def test_largest_valid_event_fits() -> None:
    """What the producer accepts never needs its details dropped."""
    alert = event(
        **{**FULL, "monitor_name": "n" * 1024, "url": "https://e.com/" + "u" * 2000},
        summary="s" * 5000,
        details={"blob": "x" * (64 * 1024 - 11)},
    )
    body = build_event(alert, destination())
    assert body["payload"]["custom_details"]["blob"] == "x" * (64 * 1024 - 11)
    assert body_size(body) <= MAX_BODY_BYTES


def test_body_size_is_compact_json() -> None:
    body = {"a": [1, 2], "b": "\u00e9"}
    assert body_size(body) == len(b'{"a":[1,2],"b":"\\u00e9"}')


# --- MoniTao's published example -------------------------------------------------------------


def test_monitao_published_example(schema: Draft7Validator) -> None:
    """PAGERDUTY.md: [DOWN] example.com - HTTP 503, critical, MoniTao, incident 123/456."""
    alert = parse_event({
        "action": "trigger",
        "monitor_id": 123,
        "incident_id": 456,
        "summary": "[DOWN] example.com - HTTP 503",
        "level": "critical",
        "monitor_name": "example.com",
        "url": "https://example.com",
        "status_code": 503,
        "response_time_ms": 30000,
        "check_location": "Paris, France",
        "incident_url": "https://monitao.com/incidents/456",
    })
    body = build_event(alert, destination())
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == "monitao-monitor-123-incident-456"
    assert body["payload"]["summary"] == "[DOWN] example.com - HTTP 503"
    assert body["payload"]["severity"] == "critical"
    assert body["payload"]["source"] == "MoniTao"
    assert body["payload"]["custom_details"] == {
        "monitor_id": "123",
        "incident_id": "456",
        "monitor_name": "example.com",
        "url": "https://example.com",
        "status_code": 503,
        "response_time_ms": 30000,
        "check_location": "Paris, France",
        "incident_url": "https://monitao.com/incidents/456",
    }
    assert [e.message for e in schema.iter_errors(body)] == []

    # "When the monitor is UP again a resolve with the same dedup_key closes the incident."
    resolved = build_event(
        parse_event({"action": "resolve", "monitor_id": 123, "incident_id": 456}), destination()
    )
    assert resolved == {
        "routing_key": KEY,
        "event_action": "resolve",
        "dedup_key": "monitao-monitor-123-incident-456",
    }
