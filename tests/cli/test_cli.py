"""The `monitao-pd` command line, run in-process through `main()` and as a subprocess."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pytest

from cli import run_command
from cli.main import main
from config import defaults
from config.embedded_redis import free_port
from config.settings import load_settings
from producer.event import MAX_DETAILS_DEPTH
from tests.conftest import Fleet
from tests.producer.test_event import nested


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, prefix: str,
            routing_key: str, sim) -> Path:
    """Environment for CLI commands: the test Redis and prefix, a destinations file."""
    config = tmp_path / "destinations.toml"
    config.write_text(
        f'[destinations.prod]\nrouting_key_env = "PD_KEY_PROD"\nevents_url = "{sim.events_url}"\n'
        '[destinations.prod.severity_map]\ncritical = "critical"\nmajor = "error"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", redis_url)
    monkeypatch.setenv("MONITAO_PD_KEY_PREFIX", prefix)
    monkeypatch.setenv("MONITAO_PD_CONFIG", str(config))
    monkeypatch.setenv("PD_KEY_PROD", routing_key)
    return config


def test_config_check_prints_destinations_without_the_routing_key(
    cli_env: Path, routing_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert "prod" in out and "set, 32 characters, from $PD_KEY_PROD" in out
    assert "configuration OK: 1 destination(s)" in out
    assert routing_key not in out


def test_config_check_reports_each_problem_and_exits_2(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env.write_text(
        '[destinations.prod]\nrouting_key_env = "PD_MISSING"\nregion = "mars"\n'
        'rate_limit_per_minute = 0\n', encoding="utf-8",
    )
    assert main(["config", "check"]) == 2
    err = capsys.readouterr().err
    problems = [line for line in err.splitlines() if line.startswith("  ")]
    assert len(problems) == 3, err
    assert any("$PD_MISSING is not set" in p for p in problems)
    assert any("destinations.prod.region" in p and "'mars'" in p for p in problems)
    assert any("destinations.prod.rate_limit_per_minute" in p for p in problems)
    assert "Traceback" not in err


def test_invalid_setting_exits_2_naming_the_variable(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MONITAO_PD_RETRY_BASE_SECONDS", "soon")
    assert main(["config", "check"]) == 2
    assert "MONITAO_PD_RETRY_BASE_SECONDS" in capsys.readouterr().err


def test_send_from_flags_enqueues_without_needing_the_routing_key(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, redis_conn, prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("PD_KEY_PROD")  # the producer never needs the secret
    code = main(["send", "--action", "trigger", "--monitor-id", "12", "--incident-id", "34",
                 "--summary", "[DOWN] example.com", "--details", '{"region": "eu"}'])
    assert code == 0
    [event_id] = capsys.readouterr().out.split()
    stored = redis_conn.hgetall(f"{prefix}event:{event_id}")
    assert stored["state"] == "pending"
    assert json.loads(stored["event"])["details"] == {"region": "eu"}
    assert redis_conn.lrange(f"{prefix}mailbox:prod/monitao-monitor-12-incident-34", 0, -1) == [
        event_id
    ]


def test_send_refuses_an_invalid_event_naming_the_field(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["send", "--action", "trigger", "--monitor-id", "1", "--incident-id", "2"]) == 1
    assert "refused: summary: required for a trigger" in capsys.readouterr().err


def test_send_file_reports_bad_lines_and_sends_the_good_ones(
    cli_env: Path, tmp_path: Path, redis_conn, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        {"action": "trigger", "monitor_id": 1, "incident_id": 1, "summary": "down"},
        "this is not json",
        {"action": "trigger", "monitor_id": 1, "incident_id": 2},
        {"action": "resolve", "monitor_id": 1, "incident_id": 1, "level": "catastrophic"},
        {"action": "resolve", "monitor_id": 1, "incident_id": 1},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n\n")

    assert main(["send", "--file", str(path)]) == 1
    captured = capsys.readouterr()
    ids = captured.out.split()
    assert len(ids) == 2
    assert redis_conn.lrange(f"{prefix}mailbox:prod/monitao-monitor-1-incident-1", 0, -1) == ids
    err = captured.err
    assert "line 2: event: not valid JSON" in err
    assert "line 3: summary: required for a trigger" in err
    assert "line 4: level: 'catastrophic' is not in destination 'prod'" in err
    assert "3 line(s) refused" in err


def test_send_file_reports_undecodable_and_too_deep_lines_and_sends_the_rest(
    cli_env: Path, tmp_path: Path, redis_conn, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def line(incident: int, **extra: object) -> bytes:
        event = {"action": "resolve", "monitor_id": 1, "incident_id": incident, **extra}
        return json.dumps(event).encode()

    too_deep_to_parse = b'{"action": "resolve", "details": ' + b"[" * 100_000 + b"]" * 100_000
    lines = [
        line(1),
        line(2, monitor_name="caf\u00e9").replace(b"\\u00e9", "é".encode("latin-1")),
        line(3, details=nested(MAX_DETAILS_DEPTH + 1)),
        too_deep_to_parse + b"}",
        line(4),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    assert main(["send", "--file", str(path)]) == 1
    captured = capsys.readouterr()
    ids = captured.out.split()
    assert len(ids) == 2
    for incident, event_id in zip((1, 4), ids, strict=True):
        assert redis_conn.lrange(
            f"{prefix}mailbox:prod/monitao-monitor-1-incident-{incident}", 0, -1) == [event_id]
    err = captured.err
    assert "line 2: event: not valid UTF-8 (byte 0xe9 at column " in err
    assert f"line 3: details: nests deeper than {MAX_DETAILS_DEPTH} levels" in err
    assert f"line 4: event: nested too deeply to read (details may nest {MAX_DETAILS_DEPTH}" in err
    assert "3 line(s) refused" in err and "Traceback" not in err


def test_send_details_flag_too_deep_is_a_usage_error(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for details, code, message in (
        ("[" * 100_000 + "]" * 100_000, 2, "--details: nested too deeply to read"),
        (json.dumps(nested(MAX_DETAILS_DEPTH + 1)), 1, "refused: details: nests deeper than"),
    ):
        assert main(["send", "--action", "resolve", "--monitor-id", "1", "--incident-id", "2",
                     "--details", details]) == code
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_timeline_and_dlq_commands(
    cli_env: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = fleet.producer.send_many([
        {"action": "trigger", "monitor_id": 5, "incident_id": 77, "summary": "down"},
        {"action": "resolve", "monitor_id": 5, "incident_id": 77},
    ])
    fleet.wait_final(ids)

    assert main(["timeline", "77", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["stage"] for e in entries] == [
        "enqueued", "enqueued", "attempt", "delivered", "attempt", "delivered"]
    for entry in entries:
        assert {"ts", "stage", "event_id", "action", "destination"} <= set(entry)
    attempt = entries[2]
    assert attempt["attempt"] == 1 and attempt["http_status"] == 202
    assert attempt["latency_ms"] >= 0 and "task_id" in attempt and "worker" in attempt

    assert main(["timeline", "77"]) == 0
    table = capsys.readouterr().out
    assert table.count("delivered") == 2 and "try 1: HTTP 202" in table

    fleet.sim.set_faults(force_status=400)
    [rejected] = fleet.producer.send_many([
        {"action": "trigger", "monitor_id": 6, "incident_id": 78, "summary": "down"}])
    fleet.wait_final([rejected])
    assert main(["dlq", "list", "--json"]) == 0
    [letter] = json.loads(capsys.readouterr().out)
    assert letter["event_id"] == rejected and letter["reason"] == "rejected"
    assert letter["errors"] == ["status 400 forced by the simulator"]
    assert {"destination", "dedup_key", "action", "attempts", "first_seen",
            "last_attempt"} <= set(letter)
    assert main(["dlq", "list"]) == 0
    assert "rejected" in capsys.readouterr().out


def test_unknown_incident_and_unreachable_redis_exit_2_without_traceback(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["timeline", "no-such-incident"]) == 2
    assert "no timeline for incident 'no-such-incident'" in capsys.readouterr().err
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    assert main(["dlq", "list"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach Redis at redis://:***@127.0.0.1" in err
    assert "hunter2" not in err and "Traceback" not in err


def test_run_starts_an_embedded_redis_when_the_default_one_is_silent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    silent = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setattr(defaults, "REDIS_URL", silent)
    with ExitStack() as stack:
        url = run_command._ensure_redis(load_settings(redis_url=silent), stack)
        assert url != silent
        import redis

        assert redis.Redis.from_url(url).ping()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()


def test_run_refuses_to_replace_a_redis_the_user_configured(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["run", "--exit-after-demo"]) == 2
    assert "cannot reach Redis" in capsys.readouterr().err
