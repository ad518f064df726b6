"""What the terminal is given: every value from outside with its control characters escaped,
in every table and plain-text output, so none can act on the terminal or forge a row."""

from __future__ import annotations

from typing import Any

import click
import pytest

from cli.formatting import (
    dead_letter_detail,
    dead_letter_table,
    reason_counts,
    replay_table,
    status_screen,
    table,
    timeline_summary,
    timeline_table,
)
from cli.main import main

HOSTILE = "Jane\x1b[2J\x1b[H\n2030-01-01  delivered  trigger  forged\u202e\x9b"
SHOWN = "Jane\\x1b[2J\\x1b[H\\n2030-01-01  delivered  trigger  forged\\u202e\\x9b"


def assert_safe(text: str, rows: int) -> None:
    """No control character but the newlines between rows, and exactly `rows` rows."""
    assert all(ch == "\n" or ch.isprintable() for ch in text), repr(text)
    assert len(text.splitlines()) == rows, text


def test_table_cells_are_escaped_and_aligned() -> None:
    shown = table([["a\nb", 1], ["c", HOSTILE]], ["name", "value"])
    assert_safe(shown, 3)
    assert shown.splitlines()[1] == "a\\nb  1"
    assert shown.splitlines()[2] == f"c     {SHOWN}"


def test_timeline_rows_from_pagerduty_and_the_endpoint() -> None:
    entries: list[dict[str, Any]] = [
        {"ts": "t1", "stage": "pagerduty_acknowledged", "action": "acknowledge",
         "event_id": "pd\nevent", "destination": "prod", "agent": HOSTILE,
         "pd_incident": "P1\r\nforged"},
        {"ts": "t2", "stage": "attempt", "action": "trigger", "event_id": "e" * 32,
         "destination": "prod", "attempt": 1, "http_status": 400, "latency_ms": 3,
         "error": f"HTTP 400: {HOSTILE}", "worker": "w\n1", "task_id": "t\x1b"},
        {"ts": "t3", "stage": "dead_lettered", "action": "trigger", "event_id": "e" * 32,
         "destination": "prod", "reason": "rejected", "error": "x\ny",
         "errors": ["one\n", "two\x1b"]},
    ]
    shown = timeline_table(entries)
    assert_safe(shown, 4)
    assert f"by {SHOWN}, PagerDuty incident P1\\r\\nforged" in shown
    assert f"HTTP 400: {SHOWN})" in shown and "[w\\n1 task t\\x1b]" in shown
    assert "rejected - x\\ny - one\\n; two\\x1b" in shown


def test_summary_dead_letters_replay_and_status() -> None:
    summary = {
        "incident_id": "inc\n1", "entries": 3, "events": 2,
        "states": {"dead_lettered": 1, "odd\x1b": 1}, "attempts": 1, "retries_scheduled": 0,
        "rate_limited": 0, "replayed": 0, "enqueue_to_first_delivery_ms": None,
        "trigger_to_resolve_ms": None,
        "keys": [{"destination": "prod", "dedup_key": "k\n1", "attempts": 1,
                  "enqueue_to_first_delivery_ms": None, "trigger_to_resolve_ms": None}] * 2,
    }
    assert_safe(timeline_summary(summary), 6)

    letter = {
        "dead_lettered_at": "t", "event_id": "e" * 32, "destination": "prod",
        "action": "trigger", "incident_id": "inc\n1", "reason": "rejected",
        "state": "dead_lettered", "attempts": 1, "errors": [HOSTILE], "error": HOSTILE,
        "dedup_key": "k\n1", "replays": 0, "first_seen": "t", "last_attempt": "t",
        "origin": "o\x1b", "raw": "raw\nbytes", "event": {"summary": HOSTILE},
        "body": None, "body_note": "n\x1b", "timeline": [],
    }
    assert_safe(dead_letter_table([letter]), 2)
    detail = dead_letter_detail(letter)
    assert all(ch == "\n" or ch.isprintable() for ch in detail)
    assert f"error        {SHOWN}" in detail
    assert f"  - {SHOWN}" in detail and "  raw\\nbytes" in detail
    assert reason_counts({"rejected\n": 1}) == "rejected\\n 1"

    decision = {"event_id": "e" * 32, "action": "trigger", "destination": "prod",
                "incident_id": "i\n", "outcome": "skipped", "reason": "r\x1b",
                "detail": HOSTILE}
    assert_safe(replay_table([decision]), 2)

    status = {
        "workers": ["w1@h\x1b[2J"], "workers_error": None, "oldest_pending_age_seconds": 5,
        "oldest_pending_event": "e\n1", "destinations_waiting": [], "destinations": {
            "prod\n": {"circuit": "closed"}},
        "pending_events": 1, "scheduled_keys": 1, "due_keys": 0, "in_flight": 0,
        "backing_off": 0, "queue_length": 0, "dead_letters_total": 1,
        "dead_letters": {"rejected\n": 1}, "replays_pending": 0, "healthy": False,
        "verdict": "x\ny",
    }
    assert_safe(status_screen(status), 11)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output as a terminal gets it: click strips ANSI sequences only from other streams."""
    monkeypatch.setattr(click.utils, "should_strip_ansi", lambda *_: False)


@pytest.mark.parametrize("command", [["health", "--timeout", "0.5"], ["timeline", "x"],
                                     ["dlq", "list"], ["config", "check"]], ids=" ".join)
def test_error_messages_show_values_from_outside_escaped(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    terminal: None,
) -> None:
    """A hostname or a file name with an escape sequence in it, quoted by an error."""
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", "redis://no-such\x1bc\x07-host.invalid:6379/0")
    monkeypatch.setenv("MONITAO_PD_CONFIG", "/nonexistent/\x1bc\nforged.toml")
    assert main(command) != 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "\x1b" not in text and "\x07" not in text and "Traceback" not in text
    assert "\\x1bc" in text and len(text.splitlines()) <= 2
