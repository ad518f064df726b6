"""The alert event: what MoniTao may send, and how each refusal names its field."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from config.errors import InvalidEventError
from producer.event import (
    MAX_DETAILS_BYTES,
    MAX_DETAILS_DEPTH,
    AlertEvent,
    nesting_depth,
    parse_event,
)


def trigger(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "action": "trigger",
        "monitor_id": "123",
        "incident_id": "456",
        "summary": "[DOWN] example.com - HTTP 503",
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not ...}


def refused(data: Any) -> list[str]:
    with pytest.raises(InvalidEventError) as excinfo:
        parse_event(data)
    assert excinfo.value.problems
    return excinfo.value.problems


def test_minimal_trigger() -> None:
    event = parse_event(trigger())
    assert isinstance(event, AlertEvent)
    assert event.action == "trigger"
    assert event.summary == "[DOWN] example.com - HTTP 503"
    assert event.level == "critical"
    assert event.details == {}
    assert event.destination is None
    assert event.occurred_at.tzinfo is not None


def test_event_id_generated_when_absent() -> None:
    first, second = parse_event(trigger()), parse_event(trigger())
    assert re.fullmatch(r"[0-9a-f]{32}", first.event_id)
    assert re.fullmatch(r"[0-9a-f]{32}", second.event_id)
    assert first.event_id != second.event_id


def test_event_id_kept_when_given() -> None:
    assert parse_event(trigger(event_id="monitao:evt-42")).event_id == "monitao:evt-42"


def test_parse_event_returns_an_event_unchanged() -> None:
    event = parse_event(trigger())
    assert parse_event(event) is event


@pytest.mark.parametrize(
    ("monitor_id", "incident_id", "dedup_key"),
    [
        (123, 456, "monitao-monitor-123-incident-456"),
        ("123", "456", "monitao-monitor-123-incident-456"),
        (0, "abc.def:1", "monitao-monitor-0-incident-abc.def:1"),
        ("m_1", 99, "monitao-monitor-m_1-incident-99"),
    ],
)
def test_ids_and_dedup_key(monitor_id: Any, incident_id: Any, dedup_key: str) -> None:
    event = parse_event(trigger(monitor_id=monitor_id, incident_id=incident_id))
    assert event.monitor_id == str(monitor_id)
    assert event.incident_id == str(incident_id)
    assert isinstance(event.monitor_id, str)
    assert isinstance(event.incident_id, str)
    assert event.dedup_key == dedup_key


def test_longest_ids_keep_dedup_key_within_pagerduty_limit() -> None:
    event = parse_event(trigger(monitor_id="m" * 100, incident_id="i" * 100))
    assert len(event.dedup_key) <= 255


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (trigger(action=...), "action"),
        (trigger(action="fire"), "action"),
        (trigger(action="TRIGGER"), "action"),
        (trigger(summary=...), "summary"),
        (trigger(summary="   "), "summary"),
        (trigger(monitor_id=...), "monitor_id"),
        (trigger(incident_id="a b"), "incident_id"),
        (trigger(incident_id="x/y"), "incident_id"),
        (trigger(incident_id=""), "incident_id"),
        (trigger(monitor_id=True), "monitor_id"),
        (trigger(monitor_id="m" * 101), "monitor_id"),
        (trigger(incident_id="9" * 101), "incident_id"),
        (trigger(event_id="e" * 129), "event_id"),
        (trigger(event_id="has space"), "event_id"),
        (trigger(colour="red"), "colour"),
        (trigger(status_code=-1), "status_code"),
        (trigger(status_code=1000), "status_code"),
        (trigger(response_time_ms=-5), "response_time_ms"),
        (trigger(incident_url="ftp://monitao.example/incidents/456"), "incident_url"),
        (trigger(incident_url="monitao.example/incidents/456"), "incident_url"),
        (trigger(details={"when": datetime(2024, 1, 1)}), "details"),
        (trigger(details={"tags": {"a", "b"}}), "details"),
        (trigger(details={"x": object()}), "details"),
        (trigger(details="not a dict"), "details"),
        (trigger(occurred_at="yesterday"), "occurred_at"),
    ],
)
def test_refused_event_names_field(data: dict[str, Any], field: str) -> None:
    problems = refused(data)
    assert any(p.startswith(f"{field}: ") for p in problems), problems
    assert problems[0] in str(InvalidEventError(problems))


def test_unknown_field_says_so() -> None:
    assert refused(trigger(colour="red")) == ["colour: unknown field (got 'red')"]


def test_a_field_name_with_control_characters_is_named_escaped() -> None:
    """The problem lines are printed by `send` and returned to MoniTao: one line each."""
    assert refused(trigger(**{"\x1b[2Jcolour\nforged": "red\n"})) == [
        "\\x1b[2Jcolour\\nforged: unknown field (got 'red\\n')"]


def test_trigger_without_summary_message() -> None:
    (problem,) = refused(trigger(summary=...))
    assert problem.startswith("summary: ")
    assert "required for a trigger" in problem


def test_missing_action_message() -> None:
    (problem,) = refused(trigger(action=...))
    assert problem.startswith("action: ")
    assert "(got" not in problem


def test_details_not_serialisable_message() -> None:
    (problem,) = refused(trigger(details={"when": datetime(2024, 1, 1)}))
    assert problem.startswith("details: must be JSON-serialisable")


def test_several_problems_all_named() -> None:
    problems = refused(trigger(action="fire", status_code=1000, colour="red"))
    assert {p.split(":", 1)[0] for p in problems} == {"action", "status_code", "colour"}


def test_long_value_shortened_in_problem() -> None:
    (problem,) = refused(trigger(monitor_id="m" * 500))
    assert problem.startswith("monitor_id: ")
    assert len(problem) < 200
    assert problem.endswith("...)")


@pytest.mark.parametrize("data", [["action", "trigger"], "trigger", None, 42])
def test_non_dict_input(data: Any) -> None:
    (problem,) = refused(data)
    assert problem == f"event: must be a JSON object, got {type(data).__name__}"


def test_details_size_limit() -> None:
    # '{"blob":"' + ... + '"}' is 11 bytes of JSON around the value.
    at_limit = {"blob": "x" * (MAX_DETAILS_BYTES - 11)}
    assert parse_event(trigger(details=at_limit)).details == at_limit
    (problem,) = refused(trigger(details={"blob": "x" * (MAX_DETAILS_BYTES - 10)}))
    assert problem.startswith("details: ")
    assert f"{MAX_DETAILS_BYTES + 1} bytes" in problem


def test_details_over_64_kib() -> None:
    (problem,) = refused(trigger(details={"blob": "x" * 70_000}))
    assert problem.startswith("details: ")


@pytest.mark.parametrize("status_code", [0, 200, 503, 999])
def test_status_code_bounds_accepted(status_code: int) -> None:
    assert parse_event(trigger(status_code=status_code)).status_code == status_code


@pytest.mark.parametrize(
    "url", ["http://monitao.example/i/456", "https://app.monitao.com/incidents/456?tab=log"]
)
def test_incident_url_http_accepted(url: str) -> None:
    assert parse_event(trigger(incident_url=url)).incident_url == url


def test_naive_occurred_at_becomes_utc() -> None:
    event = parse_event(trigger(occurred_at=datetime(2024, 5, 1, 12, 30)))
    assert event.occurred_at == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)


def test_naive_occurred_at_string_becomes_utc() -> None:
    event = parse_event(trigger(occurred_at="2024-05-01T12:30:00"))
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.occurred_at.hour == 12


def test_aware_occurred_at_kept() -> None:
    paris = timezone(timedelta(hours=2))
    event = parse_event(trigger(occurred_at=datetime(2024, 5, 1, 14, 30, tzinfo=paris)))
    assert event.occurred_at.utcoffset() == timedelta(hours=2)
    assert event.occurred_at == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def test_default_occurred_at_is_now_utc() -> None:
    before = datetime.now(UTC)
    event = parse_event(trigger())
    after = datetime.now(UTC)
    assert before <= event.occurred_at <= after


@pytest.mark.parametrize("action", ["resolve", "acknowledge"])
def test_follow_up_without_summary_valid(action: str) -> None:
    event = parse_event(trigger(action=action, summary=...))
    assert event.action == action
    assert event.summary is None
    assert event.dedup_key == "monitao-monitor-123-incident-456"


def test_whitespace_stripped() -> None:
    event = parse_event(trigger(summary="  [DOWN] example.com  ", incident_id=" 456 "))
    assert event.summary == "[DOWN] example.com"
    assert event.incident_id == "456"


def test_event_is_frozen() -> None:
    event = parse_event(trigger())
    with pytest.raises(ValueError):
        event.summary = "changed"  # type: ignore[misc]
    assert event.summary == "[DOWN] example.com - HTTP 503"


@pytest.mark.parametrize(
    "data",
    [
        trigger(),
        trigger(
            event_id="evt-1",
            destination="prod",
            level="major",
            monitor_name="example.com",
            url="https://example.com/health",
            status_code=503,
            response_time_ms=1234.5,
            check_location="eu-west",
            incident_url="https://app.monitao.com/incidents/456",
            occurred_at=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
            details={"headers": {"server": "nginx"}, "attempts": [1, 2, 3], "ok": False,
                     "note": None, "ratio": 0.25, "text": "caf\u00e9 \u2603"},
        ),
        trigger(action="resolve", summary=..., monitor_id=7, incident_id=8),
    ],
    ids=["minimal", "full", "resolve"],
)
def test_json_round_trip(data: dict[str, Any]) -> None:
    event = parse_event(data)
    raw = event.to_json()
    assert isinstance(raw, str)
    again = AlertEvent.from_json(raw)
    assert again == event
    assert again.dedup_key == event.dedup_key
    assert AlertEvent.from_json(raw.encode()) == event


def nested(depth: int) -> dict[str, Any]:
    """A `details` object `depth` levels deep, objects and arrays alternating."""
    value: Any = 1
    for level in range(depth, 0, -1):
        value = [value] if level % 2 == 0 else {"k": value}
    return value


def test_nesting_depth_counts_objects_and_arrays_without_recursion() -> None:
    assert nesting_depth("text", 5) == 0
    assert nesting_depth({}, 5) == 1
    assert nesting_depth({"a": [1, {"b": 2}]}, 5) == 3
    deep: Any = {}
    for _ in range(100_000):
        deep = {"a": deep}
    assert nesting_depth(deep, 5) == 6  # stops counting past the limit
    loop: dict[str, Any] = {}
    loop["self"] = loop
    assert nesting_depth(loop, 5) == 6


def test_details_at_the_depth_limit_are_accepted_and_read_back_as_the_worker_reads() -> None:
    details = nested(MAX_DETAILS_DEPTH)
    assert nesting_depth(details, 10**6) == MAX_DETAILS_DEPTH
    event = parse_event(trigger(details=details))
    # what the worker does with a stored event: pydantic's JSON parser, which gives up past
    # 200 levels (the 220-level event that send() accepted was dead-lettered as malformed)
    assert AlertEvent.from_json(event.to_json()).details == details


@pytest.mark.parametrize("depth", [MAX_DETAILS_DEPTH + 1, 220, 256, 5_000, 200_000])
def test_details_deeper_than_the_limit_are_refused_naming_it(depth: int) -> None:
    deep: Any = {"leaf": 1}
    for _ in range(depth - 1):
        deep = {"a": deep}
    (problem,) = refused(trigger(details=deep))
    assert problem == (f"details: nests deeper than {MAX_DETAILS_DEPTH} levels of objects and "
                       "arrays (MAX_DETAILS_DEPTH), more than the worker can read")


def test_self_referencing_details_are_refused_not_a_crash() -> None:
    loop: dict[str, Any] = {}
    loop["again"] = [loop]
    (problem,) = refused(trigger(details=loop))
    assert problem.startswith("details: nests deeper than")


def test_every_problem_is_listed_the_missing_summary_too() -> None:
    problems = refused(trigger(summary=..., monitor_id="has space", status_code=1000,
                               details=nested(MAX_DETAILS_DEPTH + 5)))
    assert [p.split(":", 1)[0] for p in problems] == [
        "monitor_id", "summary", "status_code", "details"]
    assert "summary: required for a trigger" in problems


def test_invalid_event_error_is_importable_from_producer() -> None:
    import producer

    assert producer.InvalidEventError is InvalidEventError
    assert "InvalidEventError" in producer.__all__
    assert all(hasattr(producer, name) for name in producer.__all__)
