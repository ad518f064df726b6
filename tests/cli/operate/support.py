"""Shared by the operating-command tests (test_operate_*.py): two destinations on the
simulator, the CLI's environment pointing at the test Redis and prefix, and helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from config.destinations import Destination, parse_destinations
from simulator import Simulator

STAGING_KEY = "Zq8Kc3Wn5Rt7Yp2Lm4Hx6Vb9Nd1Fg0Sj"  # 32 letters and digits, like PagerDuty's


def two_destinations(sim: Simulator, routing_key: str) -> dict[str, Destination]:
    """`prod` and `staging`, both on the simulator, with separate routing keys."""
    return parse_destinations(
        {"destinations": {
            "prod": {"routing_key": routing_key, "events_url": sim.events_url,
                     "rate_limit_per_minute": 100_000},
            "staging": {"routing_key": STAGING_KEY, "events_url": sim.events_url,
                        "rate_limit_per_minute": 100_000},
        }},
        environ={},
    )


def write_cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str,
                  prefix: str, routing_key: str, sim: Simulator) -> Path:
    """Point `monitao-pd` at the test Redis and prefix, with both destinations configured
    (routing keys through the environment, as in production)."""
    config = tmp_path / "destinations.toml"
    config.write_text(
        f'[destinations.prod]\nrouting_key_env = "PD_KEY_PROD"\nevents_url = "{sim.events_url}"\n'
        f'[destinations.staging]\nrouting_key_env = "PD_KEY_STAGING"\n'
        f'events_url = "{sim.events_url}"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", redis_url)
    monkeypatch.setenv("MONITAO_PD_KEY_PREFIX", prefix)
    monkeypatch.setenv("MONITAO_PD_CONFIG", str(config))
    monkeypatch.setenv("PD_KEY_PROD", routing_key)
    monkeypatch.setenv("PD_KEY_STAGING", STAGING_KEY)
    return config


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `monitao-pd ARGS` in-process: (exit status, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *args: str, expect: int = 0) -> Any:
    code, out, err = run(capsys, *args, "--json")
    assert code == expect, (code, out, err)
    return json.loads(out)


def event(monitor: int | str, incident: int | str, action: str, **extra: object) -> dict:
    """An alert event as MoniTao sends it (to `prod` unless told)."""
    result = {"action": action, "monitor_id": str(monitor), "incident_id": str(incident),
              "destination": "prod", **extra}
    if action == "trigger":
        result.setdefault("summary", f"[DOWN] monitor {monitor} - HTTP 503")
    return result
