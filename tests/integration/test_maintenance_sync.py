"""Maintenance windows synchronised to PagerDuty: against the simulator's REST API over real
HTTPS through PagerDuty's client, with real Redis, the reconciler driven pass by pass, in a
real worker fleet, and through the CLI."""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from cli.main import main
from config.destinations import Destination, parse_destinations
from config.keyspace import Keyspace
from config.lookup import DestinationLookup
from config.maintenance import MaintenanceWindow
from config.registry import Registry
from config.secrets import generate_key, parse_key_ring
from simulator import Simulator
from tests.conftest import Fleet, random_routing_key, wait_until
from worker import maintenance_windows
from worker.maintenance import add_window, remove_window
from worker.maintenance_sync import MaintenanceSync
from worker.maintenance_sync_state import fleet_id, read_states

GOOD_TOKEN = "good-" + secrets.token_hex(12)
BAD_TOKEN = "bad-" + secrets.token_hex(12)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """The simulator, accepting GOOD_TOKEN on its REST side (and not BAD_TOKEN)."""
    with Simulator(seed=1, rest_tokens=[GOOD_TOKEN]) as simulator:
        simulator.set_faults(rate_limit=None)
        yield simulator


@pytest.fixture
def destinations(sim: Simulator, routing_key: str) -> dict[str, Destination]:
    """`prod` with REST credentials for the simulator's service; `bad` with a token the
    simulator does not know; `plain` without REST credentials."""
    rest = {"pagerduty_service_id": "PSIMSVC", "pagerduty_api_url": sim.rest_url}
    common = {"routing_key": routing_key, "events_url": sim.events_url,
              "rate_limit_per_minute": 100_000}
    return parse_destinations({"destinations": {
        "prod": {**common, **rest, "pagerduty_api_token": GOOD_TOKEN},
        "bad": {**common, **rest, "pagerduty_api_token": BAD_TOKEN},
        "plain": common}}, environ={})


@pytest.fixture
def lookup(redis_conn: redis.Redis, prefix: str,
           destinations: dict[str, Destination]) -> DestinationLookup:
    return DestinationLookup(redis_conn, Keyspace(prefix), file_destinations=destinations)


@pytest.fixture
def make_sync(redis_conn: redis.Redis, prefix: str, sim: Simulator,
              lookup: DestinationLookup) -> Callable[..., MaintenanceSync]:
    def make(**options: Any) -> MaintenanceSync:
        return MaintenanceSync(redis_conn, Keyspace(prefix), lookup, ca_file=sim.ca_file,
                               timeout=5, attempts=1, retry_seconds=0.01,
                               retry_cap_seconds=1, **options)
    return make


def windows_on(sim: Simulator, status: str | None = None) -> list[dict[str, Any]]:
    return [w for w in sim.maintenance_windows() if status is None or w["status"] == status]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def one_off(window_id: str, hours: float = 1, length: float = 1, **extra: Any) -> (
        MaintenanceWindow):
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours)
    return MaintenanceWindow(id=window_id, destination=extra.pop("destination", "prod"),
                             start=start, end=start + timedelta(hours=length), **extra)


def test_a_window_added_changed_and_removed_follows_on_pagerduty(
        redis_conn: redis.Redis, prefix: str, sim: Simulator, lookup: DestinationLookup,
        make_sync: Callable[..., MaintenanceSync]) -> None:
    keys, sync = Keyspace(prefix), make_sync()
    window = one_off("deploy", reason="db upgrade")
    add_window(redis_conn, keys, window)
    assert sync.run_once()["created"] == 1
    [pd] = windows_on(sim)
    assert (when(pd["start_time"]), when(pd["end_time"])) == (window.start, window.end)
    fleet = fleet_id(Keyspace(prefix))
    assert pd["description"] == f"MoniTao maintenance: db upgrade [monitao:{fleet}:deploy]"
    assert [s["id"] for s in pd["services"]] == ["PSIMSVC"]
    [row] = maintenance_windows.listing(redis_conn, keys, lookup)
    assert (row["sync"], row["pagerduty_window_id"]) == ("synced", pd["id"])
    assert sync.run_once()["unchanged"] == 1  # nothing to do: no REST call
    calls = len(sim.rest_requests())
    assert sync.run_once()["unchanged"] == 1 and len(sim.rest_requests()) == calls

    longer = window.model_copy(update={"end": window.end + timedelta(hours=2),
                                       "reason": "longer"})
    add_window(redis_conn, keys, longer)
    assert maintenance_windows.listing(redis_conn, keys, lookup)[0]["sync"] == "pending"
    assert sync.run_once()["updated"] == 1
    [pd] = windows_on(sim)
    assert when(pd["end_time"]) == longer.end and "longer" in pd["description"]
    assert [r["method"] for r in sim.rest_requests()[calls:]] == ["PUT"]

    remove_window(redis_conn, keys, "deploy")
    assert sync.run_once()["deleted"] == 1
    assert windows_on(sim) == []  # a future window is deleted
    assert read_states(redis_conn, keys) == {}
    assert not redis_conn.exists(keys.maintenance_sync("deploy"))


def test_an_ongoing_window_removed_ends_on_pagerduty(
        redis_conn: redis.Redis, prefix: str, sim: Simulator,
        make_sync: Callable[..., MaintenanceSync]) -> None:
    keys, sync = Keyspace(prefix), make_sync()
    add_window(redis_conn, keys, one_off("now", hours=-0.5))
    assert sync.run_once()["created"] == 1
    assert len(windows_on(sim, "ongoing")) == 1
    remove_window(redis_conn, keys, "now")
    assert sync.run_once()["deleted"] == 1
    assert len(windows_on(sim, "ended")) == 1 and windows_on(sim, "ongoing") == []


def test_a_weekly_window_exists_for_its_next_occurrence_then_the_following_one(
        redis_conn: redis.Redis, prefix: str, sim: Simulator,
        make_sync: Callable[..., MaintenanceSync]) -> None:
    keys, sync = Keyspace(prefix), make_sync()
    now = datetime.now(UTC)
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(now.weekday() + 3) % 7]
    window = MaintenanceWindow(id="patch", destination="prod", weekly=f"{day} 02:00-04:00")
    add_window(redis_conn, keys, window)
    assert sync.run_once(now)["created"] == 1
    [pd] = windows_on(sim)
    start, end = window.occurrence(now)
    assert (when(pd["start_time"]), when(pd["end_time"])) == (start, end)
    assert start - now > timedelta(days=1)  # created ahead of time
    state = read_states(redis_conn, keys)["patch"]
    assert state.start_ms == int(start.timestamp() * 1000) and state.pd_id == pd["id"]

    # once that occurrence is over, the following one at once
    after = end + timedelta(seconds=1)
    done = sync.run_once(after)
    assert done["created"] + done["adopted"] == 1
    following = [w for w in windows_on(sim)
                 if when(w["start_time"]) == start + timedelta(days=7)]
    assert len(following) == 1 and when(following[0]["end_time"]) == end + timedelta(days=7)
    assert read_states(redis_conn, keys)["patch"].start_ms == int(
        (start + timedelta(days=7)).timestamp() * 1000)


def test_pagerduty_answering_500_then_201_ends_synced_with_one_window(
        redis_conn: redis.Redis, prefix: str, sim: Simulator, lookup: DestinationLookup,
        make_sync: Callable[..., MaintenanceSync]) -> None:
    keys, sync = Keyspace(prefix), make_sync()
    add_window(redis_conn, keys, one_off("deploy"))
    sim.set_rest_faults(fail_next=1, error_status=500)
    assert sync.run_once()["failed"] == 1
    state = read_states(redis_conn, keys)["deploy"]
    assert (state.status, state.attempts) == ("pending", 1)
    assert "HTTP 500" in state.reason
    assert maintenance_windows.listing(redis_conn, keys, lookup)[0]["sync"] == "pending"
    wait_until(lambda: sync.run_once()["created"] == 1, 5, message="the retry")
    assert len(windows_on(sim)) == 1
    assert read_states(redis_conn, keys)["deploy"].status == "synced"
    assert 500 in [r["status"] for r in sim.rest_requests()]


def test_a_create_whose_answer_was_lost_is_adopted_not_repeated(
        redis_conn: redis.Redis, prefix: str, sim: Simulator,
        make_sync: Callable[..., MaintenanceSync]) -> None:
    keys, sync = Keyspace(prefix), make_sync()
    window = one_off("deploy")
    add_window(redis_conn, keys, window)
    # PagerDuty made the window, its answer never came back: only the marker tells
    sync.run_once()
    [made] = windows_on(sim)
    redis_conn.delete(keys.maintenance_sync("deploy"))
    redis_conn.zrem(keys.maintenance_sync_due, "deploy")
    assert sync.run_once()["adopted"] == 1
    assert [w["id"] for w in windows_on(sim)] == [made["id"]]
    assert read_states(redis_conn, keys)["deploy"].pd_id == made["id"]


def test_a_401_shows_failed_with_the_reason_and_heals_when_the_token_does(
        redis_conn: redis.Redis, prefix: str, sim: Simulator, lookup: DestinationLookup,
        make_sync: Callable[..., MaintenanceSync], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys, sync = Keyspace(prefix), make_sync()
    add_window(redis_conn, keys, one_off("bad-window", destination="bad"))
    assert sync.run_once()["failed"] == 1
    [row] = maintenance_windows.listing(redis_conn, keys, lookup)
    assert row["sync"].startswith("failed: ") and "401" in row["sync"]
    assert "token" in row["sync"]
    state = read_states(redis_conn, keys)["bad-window"]
    assert state.status == "failed"
    assert sync.run_once()["waiting"] == 1  # not retryable: at the cap's pace
    assert windows_on(sim) == []
    # the token becomes valid: the next failed attempt (or a changed destination) heals
    sim.add_rest_token(BAD_TOKEN)
    wait_until(lambda: sync.run_once()["created"] == 1, 5, message="the retry at the cap")
    assert read_states(redis_conn, keys)["bad-window"].status == "synced"
    assert_secret_absent(redis_conn, prefix, caplog.text, (GOOD_TOKEN, BAD_TOKEN))


def assert_secret_absent(client: redis.Redis, prefix: str, text: str,
                         secrets_: tuple[str, ...]) -> None:
    dumped = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = client.type(key)
        if kind == "hash":
            dumped.append(json.dumps(client.hgetall(key)))
        elif kind == "string":
            dumped.append(str(client.get(key)))
        elif kind == "zset":
            dumped.append(json.dumps(client.zrange(key, 0, -1)))
        elif kind == "set":
            dumped.append(json.dumps(sorted(client.smembers(key))))
        elif kind == "stream":
            dumped.append(json.dumps(client.xrange(key)))
        elif kind == "list":
            dumped.append(json.dumps(client.lrange(key, 0, -1)))
        dumped.append(key)
    everything = "\n".join(dumped) + text
    for secret in secrets_:
        assert secret not in everything


def test_windows_not_synchronised(
        redis_conn: redis.Redis, prefix: str, sim: Simulator, lookup: DestinationLookup,
        make_sync: Callable[..., MaintenanceSync]) -> None:
    keys, sync = Keyspace(prefix), make_sync()
    add_window(redis_conn, keys, one_off("local", sync=False))
    add_window(redis_conn, keys, one_off("some", monitors=("1",)))
    add_window(redis_conn, keys, one_off("plain", destination="plain"))
    sync.run_once()
    assert windows_on(sim) == [] and sim.rest_requests() == []
    rows = {r["id"]: r["sync"] for r in maintenance_windows.listing(redis_conn, keys, lookup)}
    assert rows == {"local": "not synced: sync = false",
                    "some": "not synced: covers only some monitors", "plain": None}
    # a synced window that becomes monitor-scoped is taken off PagerDuty
    add_window(redis_conn, keys, one_off("later"))
    sync.run_once()
    assert len(windows_on(sim)) == 1
    add_window(redis_conn, keys, one_off("later", monitors=("1",)))
    assert sync.run_once()["deleted"] == 1
    assert windows_on(sim) == []


def test_two_reconcilers_at_once_make_one_window(
        redis_conn: redis.Redis, prefix: str, sim: Simulator,
        make_sync: Callable[..., MaintenanceSync]) -> None:
    keys = Keyspace(prefix)
    add_window(redis_conn, keys, one_off("deploy"))
    sim.set_rest_faults(latency_ms=300)  # the passes overlap
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def run(sync: MaintenanceSync) -> None:
        barrier.wait()
        results.append(sync.run_once())

    threads = [threading.Thread(target=run, args=(make_sync(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(r is None for r in results) == [False, True]  # one held the lock
    assert len(windows_on(sim)) == 1
    assert not redis_conn.exists(keys.maintenance_sync_lock)


def test_two_fleets_on_one_service_leave_each_others_windows_alone(
        redis_conn: redis.Redis, prefix: str, sim: Simulator, lookup: DestinationLookup,
        make_sync: Callable[..., MaintenanceSync]) -> None:
    other_keys = Keyspace(prefix + "other:")
    other = MaintenanceSync(redis_conn, other_keys,
                            DestinationLookup(redis_conn, other_keys, file_destinations=dict(
                                lookup.file_items())),
                            ca_file=sim.ca_file, timeout=5, attempts=1)
    try:
        ours = one_off("deploy")
        add_window(redis_conn, Keyspace(prefix), ours)
        add_window(redis_conn, other_keys, one_off("deploy", hours=3))
        assert make_sync().run_once()["created"] == 1
        assert other.run_once()["created"] == 1  # not adopted: the other fleet's marker
        assert len(windows_on(sim)) == 2
        remove_window(redis_conn, other_keys, "deploy")
        other.run_once()
        [left] = windows_on(sim)
        assert when(left["start_time"]) == ours.start
    finally:
        for key in redis_conn.scan_iter(match=f"{prefix}other:*"):
            redis_conn.delete(key)


def test_a_removed_run_time_destination_has_its_windows_deleted_with_the_kept_token(
        redis_conn: redis.Redis, prefix: str, sim: Simulator, routing_key: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys, ring = Keyspace(prefix), parse_key_ring(generate_key())
    registry = Registry(redis_conn, keys, key_ring=ring)
    registry.add("acme", {"events_url": sim.events_url, "pagerduty_service_id": "PSIMSVC",
                          "pagerduty_api_url": sim.rest_url}, routing_key,
                 api_token=GOOD_TOKEN)
    lookup = DestinationLookup(redis_conn, keys, key_ring=ring)
    sync = MaintenanceSync(redis_conn, keys, lookup, key_ring=ring, ca_file=sim.ca_file,
                           attempts=1)
    add_window(redis_conn, keys, one_off("acme-deploy", destination="acme"))
    assert sync.run_once()["created"] == 1
    assert len(windows_on(sim)) == 1
    registry.remove("acme", confirm=True)  # removes its windows too
    assert sync.run_once()["deleted"] == 1
    assert windows_on(sim) == []
    assert_secret_absent(redis_conn, prefix, caplog.text, (GOOD_TOKEN,))


# --- the CLI ------------------------------------------------------------------------------

@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, prefix: str,
            routing_key: str, sim: Simulator) -> None:
    config = tmp_path / "destinations.toml"
    config.write_text(
        f'[destinations.bad]\nrouting_key_env = "PD_KEY"\nevents_url = "{sim.events_url}"\n'
        f'pagerduty_service_id = "PSIMSVC"\npagerduty_api_token_env = "PD_TOKEN"\n'
        f'pagerduty_api_url = "{sim.rest_url}"\n', encoding="utf-8")
    monkeypatch.setenv("PD_KEY", routing_key)
    monkeypatch.setenv("PD_TOKEN", BAD_TOKEN)
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", redis_url)
    monkeypatch.setenv("MONITAO_PD_KEY_PREFIX", prefix)
    monkeypatch.setenv("MONITAO_PD_CONFIG", str(config))
    monkeypatch.setenv("MONITAO_PD_REST_CA_FILE", sim.ca_file)


def test_cli_shows_the_sync_state_in_list_and_status(
        cli_env: None, redis_conn: redis.Redis, prefix: str, sim: Simulator,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    start = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    assert main(["maintenance", "add", "--destination", "bad", "--id", "deploy",
                 "--start", start.isoformat(), "--end",
                 (start + timedelta(hours=1)).isoformat()]) == 0
    assert main(["maintenance", "add", "--destination", "bad", "--id", "local", "--no-sync",
                 "--weekly", "sun 02:00-04:00"]) == 0
    capsys.readouterr()
    keys = Keyspace(prefix)
    from config.destinations import load_destinations
    from config.settings import load_settings
    settings = load_settings()
    lookup = DestinationLookup(redis_conn, keys,
                               file_destinations=load_destinations(settings.config))
    MaintenanceSync(redis_conn, keys, lookup, ca_file=sim.ca_file, attempts=1).run_once()
    assert windows_on(sim) == []
    assert [r["method"] for r in sim.rest_requests()] == ["GET"]  # the 401; no POST

    assert main(["maintenance", "list"]) == 0
    listed = capsys.readouterr().out
    assert "pagerduty" in listed.splitlines()[0]
    deploy = next(line for line in listed.splitlines() if line.startswith("deploy"))
    assert "failed: " in deploy and "401" in deploy
    local = next(line for line in listed.splitlines() if line.startswith("local"))
    assert "not synced: sync = false" in local
    assert main(["maintenance", "list", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["deploy"]["sync"].startswith("failed: ")
    assert rows["local"]["sync"] == "not synced: sync = false"

    main(["status", "--no-ping"])
    status = capsys.readouterr().out
    line = next(line for line in status.splitlines() if line.startswith("pagerduty windows"))
    assert "0 synced, 0 pending, 1 failed" in line and "deploy" in line and "401" in line
    assert main(["status", "--no-ping", "--json"]) in (0, 1)
    summary = json.loads(capsys.readouterr().out)["maintenance_sync"]
    assert summary["failed"] == 1 and "401" in summary["first_failure"]
    assert_secret_absent(redis_conn, prefix, caplog.text + listed + status, (BAD_TOKEN,))


# --- a real fleet ---------------------------------------------------------------------------

def fleet_settings(sim: Simulator) -> dict[str, Any]:
    return {"rest_ca_file": sim.ca_file, "rest_attempts": 1, "rest_timeout_seconds": 5,
            "maintenance_sync_seconds": 60, "maintenance_sync_retry_seconds": 0.05,
            "maintenance_sync_retry_cap_seconds": 60}


def test_a_worker_fleet_follows_window_changes_within_a_second_or_so(
        make_fleet: Callable[..., AbstractContextManager[Fleet]], sim: Simulator) -> None:
    with make_fleet(**fleet_settings(sim)) as fleet:
        window = one_off("deploy")
        sim.set_rest_faults(fail_next=1, error_status=503)  # retried after its backoff
        add_window(fleet.redis, fleet.keys, window)
        wait_until(lambda: windows_on(sim), 5, message="the window on PagerDuty")
        assert 503 in [r["status"] for r in sim.rest_requests()]
        wait_until(lambda: read_states(fleet.redis, fleet.keys)["deploy"].status == "synced",
                   5, message="the synced state")
        longer = window.model_copy(update={"end": window.end + timedelta(hours=1)})
        add_window(fleet.redis, fleet.keys, longer)
        wait_until(lambda: [w for w in windows_on(sim) if when(w["end_time"]) == longer.end],
                   5, message="the window changed on PagerDuty")
        remove_window(fleet.redis, fleet.keys, "deploy")
        wait_until(lambda: windows_on(sim) == [], 5, message="the window deleted")
        assert len([r for r in sim.rest_requests() if r["method"] == "POST"]) == 1


def test_a_401_does_not_hold_up_the_destinations_events(
        make_fleet: Callable[..., AbstractContextManager[Fleet]], sim: Simulator,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with make_fleet(**fleet_settings(sim)) as fleet:
        add_window(fleet.redis, fleet.keys, one_off("bad-window", destination="bad"))
        wait_until(lambda: (s := read_states(fleet.redis, fleet.keys).get("bad-window"))
                   and s.status == "failed", 5, message="the failed state")
        ids = fleet.producer.send_many([
            {"destination": "bad", "action": "trigger", "monitor_id": "1",
             "incident_id": "i-1", "summary": "[DOWN] api"},
            {"destination": "bad", "action": "resolve", "monitor_id": "1",
             "incident_id": "i-1"}])
        assert set(fleet.wait_final(ids, 20).values()) == {"delivered"}
        assert windows_on(sim) == []
        assert_secret_absent(fleet.redis, fleet.settings.key_prefix, caplog.text,
                             (GOOD_TOKEN, BAD_TOKEN))


def test_only_changes_of_destinations_with_credentials_call_for_a_pass(
        redis_conn: redis.Redis, prefix: str, sim: Simulator, routing_key: str,
        make_sync: Callable[..., MaintenanceSync]) -> None:
    sync = make_sync()
    registry = Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(generate_key()))
    before = sync._versions()
    registry.add("plain", {"events_url": sim.events_url}, random_routing_key())
    registry.update("plain", {"account": "acme"})
    assert sync._versions() == before  # registering customers' destinations costs no pass
    registry.update("plain", {"pagerduty_service_id": "PSIMSVC",
                              "pagerduty_api_url": sim.rest_url}, api_token=GOOD_TOKEN)
    gained = sync._versions()
    assert gained != before
    registry.remove("plain")
    assert sync._versions() != gained
