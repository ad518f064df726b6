"""Maintenance windows with real worker threads: suppress, hold, follow-ups, the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli.main import main
from config.keyspace import slot_of
from config.maintenance import MaintenanceWindow
from config.settings import Settings
from producer import AlertProducer
from tests.conftest import Fleet, wait_until
from worker import timeline
from worker.app import create_app
from worker.context import FleetContext
from worker.delivery import deliver_slot
from worker.maintenance import add_window, held_keys, remove_window


def event(monitor: int, incident: str, action: str) -> dict:
    fields = {"action": action, "monitor_id": str(monitor), "incident_id": incident}
    return {**fields, "summary": "[DOWN]"} if action == "trigger" else fields


def test_suppressed_trigger_suppresses_its_resolve_even_after_the_window(fleet: Fleet) -> None:
    now = datetime.now(UTC)
    add_window(fleet.redis, fleet.keys, MaintenanceWindow(
        id="deploy", destination="prod", monitors=["1"], start=now - timedelta(minutes=1),
        end=now + timedelta(minutes=10), mode="suppress"))
    suppressed = fleet.producer.send_many([event(1, "a", "trigger"), event(1, "a", "acknowledge")])
    other = fleet.producer.send_many([event(2, "b", "trigger")])
    assert fleet.wait_final(suppressed + other) == {
        suppressed[0]: "suppressed", suppressed[1]: "suppressed", other[0]: "delivered"}

    remove_window(fleet.redis, fleet.keys, "deploy")
    [late_resolve] = fleet.producer.send_many([event(1, "a", "resolve")])
    assert fleet.wait_final([late_resolve]) == {late_resolve: "suppressed"}
    assert [e["dedup_key"] for e in fleet.sim.received()] == ["monitao-monitor-2-incident-b"]
    stages = [(e["stage"], e.get("reason")) for e in timeline.read(fleet.redis, fleet.keys, "a")
              if e["stage"] == "suppressed"]
    assert stages == [("suppressed", "maintenance"), ("suppressed", "trigger_suppressed"),
                      ("suppressed", "trigger_suppressed")]
    # the next outage of the same incident, outside any window, is paged again
    ids = fleet.producer.send_many([event(1, "a", "trigger"), event(1, "a", "resolve")])
    assert set(fleet.wait_final(ids).values()) == {"delivered"}


def test_held_events_are_delivered_when_the_window_ends(fleet: Fleet) -> None:
    now = datetime.now(UTC)
    ends = now + timedelta(seconds=6)
    add_window(fleet.redis, fleet.keys, MaintenanceWindow(
        id="hold", destination="prod", start=now - timedelta(minutes=1), end=ends,
        mode="hold"))
    ids = fleet.producer.send_many([event(3, "h", "trigger"), event(3, "h", "resolve")])
    wait_until(lambda: any(e["stage"] == "retry_scheduled"
                           for e in timeline.read(fleet.redis, fleet.keys, "h")),
               timeout=10, message="the events to be held")
    assert fleet.sim.received() == []
    assert set(fleet.wait_final(ids, timeout=20).values()) == {"delivered"}
    received = fleet.sim.received()
    assert [e["event_action"] for e in received] == ["trigger", "resolve"]
    assert min(e["ts"] for e in received) >= ends.timestamp() - 0.05
    held = [e for e in timeline.read(fleet.redis, fleet.keys, "h")
            if e["stage"] == "retry_scheduled"]
    assert held[0]["reason"] == "maintenance" and held[0]["window"] == "hold"
    assert fleet.redis.hget(fleet.keys.event(ids[0]), "attempts") == "1"


def hold_window(window_id: str, minutes: float = 10) -> MaintenanceWindow:
    now = datetime.now(UTC)
    return MaintenanceWindow(id=window_id, destination="prod", start=now - timedelta(minutes=1),
                             end=now + timedelta(minutes=minutes), mode="hold")


def held(fleet: Fleet, incident: str) -> list[dict]:
    return [e for e in timeline.read(fleet.redis, fleet.keys, incident)
            if e["stage"] == "retry_scheduled" and e.get("reason") == "maintenance"]


def test_removing_a_hold_window_delivers_what_it_held_at_once(fleet: Fleet) -> None:
    add_window(fleet.redis, fleet.keys, hold_window("long-hold"))
    ids = fleet.producer.send_many([event(4, "r", "trigger"), event(4, "r", "resolve")])
    other = fleet.producer.send_many([event(5, "s", "trigger")])
    wait_until(lambda: held(fleet, "r") and held(fleet, "s"), timeout=10,
               message="the events to be held")

    assert held_keys(fleet.redis, fleet.keys, "long-hold") == 2  # `maintenance list` shows it
    # the window would hold them ten more minutes; removing it wakes both keys now
    assert remove_window(fleet.redis, fleet.keys, "long-hold") == 2
    assert set(fleet.wait_final(ids + other, timeout=20).values()) == {"delivered"}
    assert [e["event_action"] for e in fleet.sim.received()
            if e["dedup_key"].endswith("-r")] == ["trigger", "resolve"]
    assert not fleet.redis.exists(fleet.keys.maintenance_held("long-hold"))
    assert remove_window(fleet.redis, fleet.keys, "long-hold") is None


def test_shortening_a_hold_window_delivers_at_its_new_end(fleet: Fleet) -> None:
    add_window(fleet.redis, fleet.keys, hold_window("shortened"))
    [trigger] = fleet.producer.send_many([event(6, "t", "trigger")])
    wait_until(lambda: held(fleet, "t"), timeout=10, message="the trigger to be held")

    ends = datetime.now(UTC) + timedelta(seconds=4)
    replacement = hold_window("shortened").model_copy(update={"end": ends})
    assert add_window(fleet.redis, fleet.keys, replacement) == 1
    assert fleet.wait_final([trigger], timeout=20) == {trigger: "delivered"}
    [received] = fleet.sim.received()
    assert received["ts"] >= ends.timestamp() - 0.05  # held by the new window until its end
    assert [e["retry_at"] for e in held(fleet, "t")][-1] == int(ends.timestamp() * 1000)


def test_a_worker_with_a_stale_view_of_a_removed_window_holds_nothing(
    settings: Settings, destinations, sim, redis_conn
) -> None:
    # workers cache the windows for 30 s here: one still sees the window after its removal
    stale = settings.model_copy(update={"maintenance_cache_seconds": 30.0})
    ctx = FleetContext(stale, destinations)
    producer = AlertProducer(stale, destinations=destinations, redis=redis_conn,
                             celery_app=create_app(stale, destinations))
    keys, dedup = ctx.keys, "monitao-monitor-7-incident-u"
    try:
        add_window(redis_conn, keys, hold_window("stale"))
        [trigger] = producer.send_many([event(7, "u", "trigger")])
        assert deliver_slot(ctx, "prod", dedup).ended == "waiting"
        assert redis_conn.smembers(keys.maintenance_held("stale")) == {slot_of("prod", dedup)}

        assert remove_window(redis_conn, keys, "stale") == 1
        assert deliver_slot(ctx, "prod", dedup).ended == "waiting"  # still sees the window
        due_in = redis_conn.zscore(keys.schedule, slot_of("prod", dedup)) - (
            datetime.now(UTC).timestamp() * 1000)
        assert due_in <= 30_100  # looked at again once the view is fresh, not in 10 minutes
        entries = [e for e in timeline.read(redis_conn, keys, "u")
                   if e["stage"] == "retry_scheduled"]
        assert len(entries) == 1  # the pass that held nothing says nothing

        fresh = FleetContext(settings, destinations)
        try:
            deliver_slot(fresh, "prod", dedup)
        finally:
            fresh.close()
        assert redis_conn.hget(keys.event(trigger), "state") == "delivered"
        assert [e["dedup_key"] for e in sim.received()] == [dedup]
    finally:
        ctx.close()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str,
            prefix: str) -> None:
    config = tmp_path / "destinations.toml"
    config.write_text(
        '[destinations.prod]\nrouting_key_env = "PD_KEY"\n'
        '[[destinations.prod.maintenance]]\nweekly = "sun 02:00-04:00"\nmode = "hold"\n',
        encoding="utf-8")
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", redis_url)
    monkeypatch.setenv("MONITAO_PD_KEY_PREFIX", prefix)
    monkeypatch.setenv("MONITAO_PD_CONFIG", str(config))


def test_maintenance_cli(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["maintenance", "add", "--destination", "prod", "--monitor", "123",
                 "--start", "2030-01-01T00:00:00Z", "--end", "2030-01-01T02:00:00Z",
                 "--mode", "suppress", "--id", "upgrade", "--reason", "db upgrade"]) == 0
    assert "added window upgrade" in capsys.readouterr().out
    assert main(["maintenance", "list", "--json"]) == 0
    windows = {w["id"]: w for w in json.loads(capsys.readouterr().out)}
    assert set(windows) == {"prod-1", "upgrade"}
    assert windows["prod-1"]["origin"] == "config" and windows["prod-1"]["mode"] == "hold"
    assert windows["upgrade"]["monitors"] == ["123"]
    assert windows["upgrade"]["active_until"] is None
    assert (windows["upgrade"]["holding"], windows["prod-1"]["holding"]) == (0, None)
    assert main(["maintenance", "list"]) == 0
    assert "db upgrade" in capsys.readouterr().out

    assert main(["maintenance", "remove", "prod-1"]) == 2
    assert "defined in the destinations file" in capsys.readouterr().err
    assert main(["maintenance", "remove", "upgrade"]) == 0
    assert main(["maintenance", "remove", "upgrade"]) == 2
    assert "no maintenance window 'upgrade'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--destination", "nope", "--weekly", "sun 02:00-04:00"], "unknown destination"),
        (["--destination", "prod", "--weekly", "sunday"], "--weekly"),
        (["--destination", "prod"], "either start and end, or weekly"),
    ],
)
def test_maintenance_add_refuses_bad_input(cli_env: None, capsys: pytest.CaptureFixture[str],
                                           args: list[str], message: str) -> None:
    assert main(["maintenance", "add", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_resolve_held_longer_than_the_maximum_age_is_delivered_after_the_window(
    settings: Settings, destinations, sim, redis_conn, redis_url: str, prefix: str
) -> None:
    # issue 16, case 6: time held by a window does not age an event, so a `hold` window
    # longer than max_event_age holds the resolve and delivers it, never expires it
    from config.settings import load_settings
    from tests.conftest import FAST

    aged = load_settings(redis_url=redis_url, key_prefix=prefix,
                         **{**FAST, "max_event_age_seconds": 1.0})
    ctx = FleetContext(aged, destinations)
    producer = AlertProducer(aged, destinations=destinations, redis=redis_conn,
                             celery_app=create_app(aged, destinations))
    dedup_key = "monitao-monitor-5-incident-held"
    try:
        [trigger] = producer.send_many([event(5, "held", "trigger")])
        deliver_slot(ctx, "prod", dedup_key)
        now = datetime.now(UTC)
        add_window(redis_conn, ctx.keys, MaintenanceWindow(
            id="long-hold", destination="prod", start=now - timedelta(seconds=1),
            end=now + timedelta(seconds=2.5), mode="hold"))
        [resolve] = producer.send_many([event(5, "held", "resolve")])

        def final() -> str | None:
            deliver_slot(ctx, "prod", dedup_key)
            state = redis_conn.hget(ctx.keys.event(resolve), "state")
            return state if state != "pending" else None

        assert wait_until(final, 15, 0.1, "the held resolve") == "delivered"
        assert float(redis_conn.hget(ctx.keys.event(resolve), "held_ms")) >= 1500
        assert [e["event_action"] for e in sim.received()] == ["trigger", "resolve"]
        assert redis_conn.hget(ctx.keys.event(trigger), "state") == "delivered"
    finally:
        ctx.close()


def test_what_pagerduty_holds_is_kept_while_the_alert_is_open(
    ctx: FleetContext, settings: Settings, destinations, sim, redis_conn
) -> None:
    # issue 16, case 5: kept with no expiry (it used to end after 90 days, and a suppress
    # window then dropped the resolve of an alert PagerDuty still held)
    producer = AlertProducer(settings, destinations=destinations, redis=redis_conn,
                             celery_app=create_app(settings, destinations))
    slot = slot_of("prod", "monitao-monitor-5-incident-open")
    producer.send_many([event(5, "open", "trigger")])
    deliver_slot(ctx, "prod", "monitao-monitor-5-incident-open")
    assert redis_conn.get(ctx.keys.last_sent(slot)) == "trigger"
    assert redis_conn.pttl(ctx.keys.last_sent(slot)) == -1  # no expiry at all
    producer.send_many([event(5, "open", "resolve")])
    deliver_slot(ctx, "prod", "monitao-monitor-5-incident-open")
    assert not redis_conn.exists(ctx.keys.last_sent(slot))  # gone once resolved
