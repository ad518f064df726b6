"""Fields of PagerDuty's webhooks reach the terminal and the log escaped: an escape sequence
and a newline in `agent.summary` neither clear the screen nor forge a row or a log line."""

from __future__ import annotations

import logging

import click
import httpx
import pytest

from cli.main import main
from config.logs import escape_log_records
from simulator import Simulator
from tests.conftest import Fleet, wait_until
from tests.webhooks.conftest import SECRET_A
from webhooks import WebhookService
from worker import timeline

FORGED_ROW = "2030-01-01T00:00:00Z  delivered  resolve  forged-row"
HOSTILE_AGENT = f"Jane\x1b[2J\x1b[H\n{FORGED_ROW}\u202e"
SHOWN_AGENT = f"Jane\\x1b[2J\\x1b[H\\n{FORGED_ROW}\\u202e"


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output as a terminal gets it: click strips ANSI sequences only from other streams."""
    monkeypatch.setattr(click.utils, "should_strip_ansi", lambda *_: False)


def test_an_escape_sequence_in_agent_summary_reaches_neither_terminal_nor_log(
        fleet: Fleet, sim: Simulator, receiver: WebhookService,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture, terminal: None) -> None:
    escape_log_records()  # as every fleet process does (`monitao-pd ...`, a Celery worker)
    caplog.set_level(logging.INFO)
    sim.set_webhook(receiver.url, SECRET_A)
    event_id = fleet.producer.send({
        "action": "trigger", "monitor_id": 78, "incident_id": "hostile-1",
        "summary": "[DOWN] example.com - HTTP 503", "level": "critical"})
    assert fleet.wait_final([event_id]) == {event_id: "delivered"}
    answer = httpx.post(f"{sim.url}/_sim/incidents/monitao-monitor-78-incident-hostile-1/"
                        "acknowledge", json={"agent": HOSTILE_AGENT}, timeout=10)
    assert answer.status_code == 200

    def acknowledged() -> list[dict]:
        return [e for e in timeline.read(fleet.redis, fleet.keys, "hostile-1")
                if e["stage"] == "pagerduty_acknowledged"]

    [entry] = wait_until(acknowledged, 20, message="pagerduty_acknowledged in the timeline")
    assert entry["agent"] == HOSTILE_AGENT  # kept as PagerDuty sent it; escaped when shown

    monkeypatch.setenv("MONITAO_PD_REDIS_URL", fleet.settings.redis_url)
    monkeypatch.setenv("MONITAO_PD_KEY_PREFIX", fleet.settings.key_prefix)
    capsys.readouterr()
    assert main(["timeline", "hostile-1"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    lines = out.splitlines()
    assert not any(line.startswith(FORGED_ROW[:20]) for line in lines), out
    [row] = [line for line in lines if "pagerduty_acknowledged" in line]
    assert f"by {SHOWN_AGENT}, PagerDuty incident P" in row

    wait_until(lambda: "hostile-1 by" in caplog.text, 10, message="the processor's log line")
    assert "\x1b" not in caplog.text
    [logged] = [line for line in caplog.text.splitlines() if "hostile-1 by" in line]
    assert logged.endswith(f"hostile-1 by {SHOWN_AGENT} (PagerDuty event {entry['pd_event_id']})")
    assert not any(line.startswith(FORGED_ROW[:20]) for line in caplog.text.splitlines())
