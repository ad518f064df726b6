"""`monitao-pd test-destination NAME`: a test trigger and its resolve through the fleet,
each outcome with its latency, and a non-zero exit when either failed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.operate.support import run, run_json
from tests.conftest import Fleet


def test_sends_a_trigger_then_its_resolve_with_a_dedup_key_of_its_own(
    cli_env: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_json(capsys, "test-destination", "staging")
    assert report["ok"] is True and report["destination"] == "staging"
    trigger, resolve = report["results"]
    assert (trigger["action"], resolve["action"]) == ("trigger", "resolve")
    for result in (trigger, resolve):
        assert result["state"] == "delivered" and result["http_status"] == 202
        assert result["latency_ms"] >= 0 and result["attempt_latency_ms"] >= 0

    incident = report["incident_id"]
    dedup_key = f"monitao-monitor-monitao-pd-test-incident-{incident}"
    received = [e for e in fleet.sim.received() if e["dedup_key"] == dedup_key]
    assert [e["event_action"] for e in received] == ["trigger", "resolve"]
    assert received[0]["body"]["payload"]["severity"] == "info"  # the gentlest level
    assert received[0]["body"]["payload"]["summary"].startswith("[TEST]")
    [opened] = [i for i in fleet.sim.incidents() if i["dedup_key"] == dedup_key]
    assert opened["status"] == "resolved"

    code, out, _ = run(capsys, "test-destination", "prod")
    assert code == 0
    lines = out.splitlines()
    assert re.match(r"trigger +\w{12}  delivered in [\d.]+ m?s \(HTTP 202, request [\d.]+ ms, "
                    r"1 attempt\(s\)\)", lines[0]), out
    assert re.match(r"resolve +\w{12}  delivered in ", lines[1]), out
    assert lines[-1].startswith("OK: test incident test-") and "on prod" in lines[-1]


def test_exits_1_when_pagerduty_refuses(
    cli_env: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet.sim.set_faults(force_status=400)
    code, out, _ = run(capsys, "test-destination", "prod")
    assert code == 1
    assert out.count("FAILED: dead_lettered (rejected)") == 2
    assert "FAILED: test incident" in out


def test_exits_1_when_no_worker_delivers_in_time(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_json(capsys, "test-destination", "prod", "--timeout", "0.3", expect=1)
    assert [r["state"] for r in report["results"]] == ["pending", "pending"]
    assert report["results"][0]["error"] == "not delivered within 0.3 s"


def test_unknown_destination_exits_2(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "test-destination", "nowhere")
    assert code == 2 and out == ""
    assert err == "error: unknown destination 'nowhere' (configured: prod, staging)\n"
