"""Maintenance windows: validation, one-off and weekly matching, which window governs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from config.destinations import parse_destinations
from config.errors import ConfigurationError
from config.maintenance import MaintenanceWindow, active_window


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("weekly", "now", "until"),
    [
        ("sat 02:00-04:00", "2026-11-28T02:00:00", "2026-11-28T04:00:00"),  # a Saturday
        ("sat 02:00-04:00", "2026-11-28T03:59:59", "2026-11-28T04:00:00"),
        ("sat 02:00-04:00", "2026-11-28T04:00:00", None),
        ("sat 02:00-04:00", "2026-11-28T01:59:00", None),
        ("sat 02:00-04:00", "2026-11-21T03:00:00", "2026-11-21T04:00:00"),  # a week before
        ("sat 02:00-04:00", "2026-11-29T03:00:00", None),  # Sunday
        ("sat 23:00-01:00", "2026-11-28T23:30:00", "2026-11-29T01:00:00"),  # over midnight
        ("sat 23:00-01:00", "2026-11-29T00:30:00", "2026-11-29T01:00:00"),
        ("sat 23:00-01:00", "2026-11-29T01:00:00", None),
        ("sun 23:00-01:00", "2026-11-30T00:30:00", "2026-11-30T01:00:00"),  # over the week
    ],
)
def test_weekly_windows(weekly: str, now: str, until: str | None) -> None:
    window = MaintenanceWindow(destination="prod", weekly=weekly)
    assert window.active_until(at(now)) == (at(until) if until else None)


def test_one_off_window_is_half_open() -> None:
    window = MaintenanceWindow(destination="prod", start=at("2026-12-01T02:00:00"),
                               end=at("2026-12-01T04:00:00"))
    assert window.active_until(at("2026-12-01T02:00:00")) == at("2026-12-01T04:00:00")
    assert window.active_until(at("2026-12-01T04:00:00")) is None
    assert window.active_until(at("2026-12-01T01:59:59")) is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"weekly": "sunday 2am"}, "sun 02:00-04:00"),
        ({"weekly": "sun 24:00-01:00"}, "sun 02:00-04:00"),
        ({}, "either start and end, or weekly"),
        ({"start": "2026-12-01T02:00:00Z", "end": "2026-12-01T01:00:00Z"}, "start before"),
        ({"start": "2026-12-01T02:00:00Z"}, "start before its end"),
        ({"weekly": "sun 02:00-04:00", "start": "2026-12-01T02:00:00Z"}, "either"),
        ({"weekly": "sun 02:00-04:00", "mode": "ignore"}, "'suppress' or 'hold'"),
    ],
)
def test_invalid_windows_name_the_problem(fields: dict, problem: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        MaintenanceWindow(destination="prod", **fields)
    assert problem in str(excinfo.value)


def test_monitor_filter_and_suppress_wins_over_hold() -> None:
    now = at("2026-12-01T03:00:00")
    hold = MaintenanceWindow(id="h", destination="prod", weekly="tue 00:00-23:00", mode="hold")
    only_7 = MaintenanceWindow(id="s", destination="prod", monitors=["7"], mode="suppress",
                               start=at("2026-12-01T02:00:00"), end=at("2026-12-01T04:00:00"))
    other = MaintenanceWindow(id="o", destination="staging", weekly="tue 00:00-23:00")
    windows = [hold, only_7, other]
    assert active_window(windows, "prod", "7", now)[0].id == "s"
    assert active_window(windows, "prod", "8", now)[0].id == "h"
    assert active_window(windows, "staging", "8", now)[0].id == "o"
    assert active_window(windows, "dev", "7", now) is None


def test_windows_in_the_destinations_file() -> None:
    document = {"destinations": {"prod": {
        "routing_key": "R" * 32,
        "maintenance": [
            {"weekly": "sun 02:00-04:00", "mode": "hold"},
            {"start": "2026-12-01T02:00:00Z", "end": "2026-12-01T04:00:00Z",
             "monitors": [123], "id": "db-upgrade"},
        ],
    }}}
    [first, second] = parse_destinations(document, environ={})["prod"].maintenance
    assert (first.id, first.destination, first.origin, first.mode) == (
        "prod-1", "prod", "config", "hold")
    assert (second.id, second.monitors) == ("db-upgrade", ("123",))


def test_a_bad_window_in_the_file_names_its_place() -> None:
    document = {"destinations": {"prod": {
        "routing_key": "R" * 32, "maintenance": [{"weekly": "whenever"}]}}}
    with pytest.raises(ConfigurationError) as excinfo:
        parse_destinations(document, environ={})
    [problem] = excinfo.value.problems
    assert problem.startswith("destinations.prod.maintenance.0.weekly")
