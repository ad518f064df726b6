"""Reading webhook v3 bodies and dedup_keys: pure functions."""

from __future__ import annotations

import json

import pytest

from webhooks.events import (
    NotAnEvent,
    incident_candidates,
    parse,
    state_change,
    timeline_fields,
)


def body(**event: object) -> bytes:
    return json.dumps({"event": event}).encode()


ACK = body(id="01EV", event_type="incident.acknowledged", resource_type="incident",
           occurred_at="2026-11-27T10:15:00.000Z",
           agent={"id": "PUSR", "summary": "Jane Responder", "type": "user_reference"},
           data={"id": "PINC", "status": "acknowledged", "type": "incident",
                 "incident_key": "monitao-monitor-123-incident-456",
                 "service": {"id": "PSVC", "summary": "web"}})


def test_an_acknowledgement() -> None:
    event = parse(ACK)
    assert (event.pd_event_id, event.event_type, event.agent, event.pd_incident,
            event.pd_status, event.incident_key) == (
        "01EV", "incident.acknowledged", "Jane Responder", "PINC", "acknowledged",
        "monitao-monitor-123-incident-456")
    assert event.synced and event.stage == "pagerduty_acknowledged"
    fields = timeline_fields(event, "prod", event.incident_key or "")
    assert dict(zip(fields[::2], fields[1::2], strict=True)) == {
        "stage": "pagerduty_acknowledged", "event_id": "01EV", "action": "acknowledged",
        "destination": "prod", "dedup_key": "monitao-monitor-123-incident-456",
        "pd_event_id": "01EV", "event_type": "incident.acknowledged",
        "occurred_at": "2026-11-27T10:15:00.000Z", "agent": "Jane Responder",
        "pd_incident": "PINC", "pd_status": "acknowledged"}
    assert state_change(event, "123", "456", "k")["incident_id"] == "456"


def test_a_note_references_its_incident() -> None:
    event = parse(body(id="E2", event_type="incident.annotated", agent={"email": "a@b.c"},
                       data={"id": "NOTE", "type": "incident_note", "content": "hi",
                             "incident": {"id": "PINC", "type": "incident_reference"}}))
    assert (event.pd_incident, event.incident_key, event.agent) == ("PINC", None, "a@b.c")


def test_types_not_synced() -> None:
    assert not parse(body(id="E", event_type="incident.triggered")).synced
    assert not parse(body(id="E", event_type="pagey.ping")).synced


def test_lone_surrogates_are_replaced_in_every_field() -> None:
    """JSON can spell a lone surrogate; no Redis key or value can hold one, and a pair
    spelt in two escapes is one character, left alone."""
    raw = (b'{"event": {"id": "E\\ud800", "event_type": "incident.acknowledged\\udfff", '
           b'"occurred_at": "\\udc80", "agent": {"summary": "Jane\\ud83d"}, '
           b'"data": {"id": "P\\udbff", "status": "\\ud800x", '
           b'"incident_key": "monitao-monitor-1-incident-\\ud800\\ud83d\\ude00"}}}')
    event = parse(raw)
    assert (event.pd_event_id, event.event_type, event.occurred_at, event.agent,
            event.pd_incident, event.pd_status, event.incident_key) == (
        "E\ufffd", "incident.acknowledged\ufffd", "\ufffd", "Jane\ufffd", "P\ufffd",
        "\ufffdx", "monitao-monitor-1-incident-\ufffd\U0001f600")
    for value in timeline_fields(event, "prod", event.incident_key or ""):
        value.encode("utf-8")  # strict: would raise on a surrogate


@pytest.mark.parametrize("raw", [
    b"not json", b"[]", b"{}", b'{"event": 1}', b'{"event": {"id": 1}}',
    b'{"event": {"id": "x"}}', b'{"event": {"id": "x", "event_type": ""}}',
])
def test_not_an_event(raw: bytes) -> None:
    with pytest.raises(NotAnEvent):
        parse(raw)


@pytest.mark.parametrize(("key", "expected"), [
    ("monitao-monitor-123-incident-456", [("123", "456")]),
    ("monitao-monitor-a-incident-b-incident-c", [("a", "b-incident-c"), ("a-incident-b", "c")]),
    ("monitao-monitor-1-incident-demo-25be19", [("1", "demo-25be19")]),
    ("other-key", []),
    ("monitao-monitor--incident-4", []),
    ("monitao-monitor-4-incident-", []),
])
def test_incident_candidates(key: str, expected: list[tuple[str, str]]) -> None:
    assert incident_candidates(key) == expected
