"""`monitao-pd replay`: per-key order kept, stale triggers superseded (unless --force), a
pending replay queued once, dead letters left only once delivered, --dry-run, filters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from config.keyspace import Keyspace, slot_of
from config.settings import load_settings
from producer import AlertProducer
from tests.cli.operate.support import event, run, run_json
from tests.conftest import Fleet, wait_until
from worker import timeline
from worker.app import create_app
from worker.replay import Replayer


def dead_letter(fleet: Fleet, sent: dict, status: int = 400) -> str:
    """Send one event while the simulator answers `status`; return its dead letter's id."""
    fleet.sim.set_faults(force_status=status)
    [event_id] = fleet.producer.send_many([sent])
    assert fleet.wait_final([event_id]) == {event_id: "dead_lettered"}
    fleet.sim.set_faults(force_status=None)
    return event_id


def accepted(fleet: Fleet, dedup_key: str) -> list[str]:
    """Actions PagerDuty (the simulator) accepted for one dedup_key, in arrival order."""
    return [e["event_action"] for e in fleet.sim.received() if e["dedup_key"] == dedup_key]


def stages(fleet: Fleet, incident: str, event_id: str) -> list[str]:
    return [e["stage"] for e in timeline.read(fleet.redis, fleet.keys, incident)
            if e["event_id"] == event_id]


def test_dry_run_then_replay_delivers_and_leaves_the_dead_letters(
    cli_env: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    trigger = dead_letter(fleet, event(1, 40, "trigger"))

    [plan] = run_json(capsys, "replay", trigger, "--dry-run")
    assert plan["outcome"] == "would_queue" and plan["detail"] == "queued at the tail of its key"
    assert fleet.state(trigger) == "dead_lettered" and accepted(fleet, plan["dedup_key"]) == []

    code, out, _ = run(capsys, "replay", trigger)
    assert code == 0 and "queued" in out and "1 queued" in out
    assert fleet.wait_final([trigger]) == {trigger: "delivered"}
    assert accepted(fleet, "monitao-monitor-1-incident-40") == ["trigger"]
    assert fleet.redis.zscore(fleet.keys.dead_letters, trigger) is None
    assert stages(fleet, "40", trigger) == [
        "enqueued", "attempt", "dead_lettered", "replayed", "attempt", "delivered"]
    [replayed] = [e for e in timeline.read(fleet.redis, fleet.keys, "40")
                  if e["stage"] == "replayed"]
    assert replayed["reason"] == "rejected" and "@" in replayed["operator"]
    record = fleet.redis.hgetall(fleet.keys.event(trigger))
    assert record["replays"] == "1" and int(record["original_enqueued_at"]) <= int(
        record["replayed_at"])


def test_a_trigger_whose_resolve_was_delivered_is_superseded_unless_forced(
    cli_env: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = dead_letter(fleet, event(2, 41, "trigger"))
    [resolve] = fleet.producer.send_many([event(2, 41, "resolve")])
    assert fleet.wait_final([resolve]) == {resolve: "delivered"}

    [plan] = run_json(capsys, "replay", stale, "--dry-run")
    assert plan["outcome"] == "would_supersede" and plan["reason"] == "superseded"
    assert f"({resolve[:12]}, resolve) was delivered" in plan["detail"]
    assert fleet.state(stale) == "dead_lettered"

    code, out, _ = run(capsys, "replay", stale)
    assert code == 0 and "superseded" in out
    assert fleet.state(stale) == "superseded"
    assert fleet.redis.zscore(fleet.keys.dead_letters, stale) is None
    assert stages(fleet, "41", stale)[-1] == "superseded"
    last = list(timeline.read(fleet.redis, fleet.keys, "41"))[-1]
    assert last["reason"] == "superseded" and resolve[:12] in last["error"]
    assert run_json(capsys, "replay", stale, expect=1)[0]["reason"] == "not_dead_lettered"
    assert accepted(fleet, "monitao-monitor-2-incident-41") == ["resolve"]  # no stale trigger

    forced = dead_letter(fleet, event(3, 42, "trigger"))
    [resolve] = fleet.producer.send_many([event(3, 42, "resolve")])
    fleet.wait_final([resolve])
    [decision] = run_json(capsys, "replay", forced, "--force")
    assert decision["outcome"] == "queued" and "forced" in decision["detail"]
    assert fleet.wait_final([forced]) == {forced: "delivered"}
    assert accepted(fleet, "monitao-monitor-3-incident-42") == ["resolve", "trigger"]


def test_replay_goes_ahead_of_later_pending_events_of_its_key(
    cli_env: Path, make_fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    with make_fleet(circuit_threshold=10_000) as fleet:
        trigger = dead_letter(fleet, event(4, 43, "trigger"))
        fleet.sim.set_faults(error_rate=1.0)  # the resolve keeps failing, so it stays pending
        [resolve] = fleet.producer.send_many([event(4, 43, "resolve")])
        wait_until(lambda: int(fleet.redis.hget(fleet.keys.event(resolve), "attempts")) >= 2,
                   message="the resolve to fail twice")

        [decision] = run_json(capsys, "replay", trigger)
        assert decision["outcome"] == "queued" and decision["later_pending"] == [resolve]
        assert "goes ahead of 1 later pending event(s)" in decision["detail"]
        slot = slot_of("prod", "monitao-monitor-4-incident-43")
        assert fleet.redis.lrange(fleet.keys.mailbox(slot), 0, -1) == [trigger, resolve]

        fleet.sim.set_faults(error_rate=0.0)
        assert fleet.wait_final([trigger, resolve]) == {
            trigger: "delivered", resolve: "delivered"}
        assert accepted(fleet, "monitao-monitor-4-incident-43") == ["trigger", "resolve"]
        [incident] = [i for i in fleet.sim.incidents()
                      if i["dedup_key"] == "monitao-monitor-4-incident-43"]
        assert incident["status"] == "resolved"


def test_replaying_twice_while_pending_queues_once(
    cli_env: Path, make_fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    with make_fleet() as fleet:
        trigger = dead_letter(fleet, event(5, 44, "trigger"))
    # no worker now: the replay stays pending
    assert run_json(capsys, "replay", trigger)[0]["outcome"] == "queued"
    code, out, _ = run(capsys, "replay", trigger)
    assert code == 0 and "already_pending" in out
    [letter] = run_json(capsys, "dlq", "list")
    assert letter["state"] == "replay_pending"  # still a dead letter until delivered
    slot = slot_of("prod", "monitao-monitor-5-incident-44")
    keys = Keyspace(load_settings().key_prefix)
    client = redis.Redis.from_url(load_settings().redis_url, decode_responses=True)
    try:
        assert client.lrange(keys.mailbox(slot), 0, -1) == [trigger]
        assert client.zscore(keys.schedule, slot) is not None
    finally:
        client.close()

    with make_fleet() as fleet:
        assert fleet.wait_final([trigger]) == {trigger: "delivered"}
        assert accepted(fleet, "monitao-monitor-5-incident-44") == ["trigger"]
        assert stages(fleet, "44", trigger).count("replayed") == 1
    assert run_json(capsys, "dlq", "list") == []


def test_filters_and_all_and_a_replay_dead_lettered_again_stays(
    cli_env: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    rejected = dead_letter(fleet, event(6, 45, "trigger"))
    missing = dead_letter(fleet, event(6, 46, "trigger", destination="staging"), status=404)

    plans = run_json(capsys, "replay", "--reason", "http_404", "--dry-run")
    assert [(p["event_id"], p["outcome"]) for p in plans] == [(missing, "would_queue")]
    code, _, err = run(capsys, "replay")
    assert code == 2 and "name event ids, give filters, or --all" in err

    fleet.sim.set_faults(force_status=400)
    decisions = run_json(capsys, "replay", "--all")
    assert {d["event_id"]: d["outcome"] for d in decisions} == {
        rejected: "queued", missing: "queued"}
    wait_until(lambda: all(fleet.redis.hget(fleet.keys.event(i), "attempts") == "2"
                           and fleet.state(i) == "dead_lettered" for i in (rejected, missing)),
               message="both replays to be dead-lettered again")
    letters = {e["event_id"]: e for e in run_json(capsys, "dlq", "list")}
    assert set(letters) == {rejected, missing}
    assert letters[missing]["reason"] == "rejected" and letters[missing]["replays"] == 1


def test_expired_history_is_skipped_unless_forced_and_unknown_ids_exit_2(
    cli_env: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    old = dead_letter(fleet, event(7, 47, "trigger"))
    fleet.redis.delete(fleet.keys.timeline("47"))

    [decision] = run_json(capsys, "replay", old, expect=1)
    assert decision["outcome"] == "skipped" and decision["reason"] == "history_expired"
    code, _, err = run(capsys, "replay", old, "no-such-event")
    assert code == 2 and err == "error: no event 'no-such-event'\n"
    assert fleet.state(old) == "dead_lettered"  # nothing was replayed

    [decision] = run_json(capsys, "replay", old, "--force")
    assert decision["outcome"] == "queued"
    assert fleet.wait_final([old]) == {old: "delivered"}


def test_order_comes_from_the_timeline_and_an_attempt_in_flight_is_waited_for(
    redis_url: str, prefix: str, destinations, redis_conn: redis.Redis,
) -> None:
    """Without workers: two events of one key enqueued in the same millisecond, the first
    dead-lettered by hand (as the finish script does); its replay must go ahead of the
    second, and not while a worker holds the key with the second at the head."""
    settings = load_settings(redis_url=redis_url, key_prefix=prefix)
    keys = Keyspace(prefix)
    app = create_app(settings, destinations)
    with AlertProducer(settings, destinations=destinations, redis=redis_conn,
                       celery_app=app) as producer:
        first, second = producer.send_many([event(8, 48, "trigger"), event(8, 48, "resolve")])
    app.close()
    slot = slot_of("prod", "monitao-monitor-8-incident-48")
    assert redis_conn.lpop(keys.mailbox(slot)) == first
    redis_conn.hset(keys.event(first), mapping={"state": "dead_lettered", "reason": "rejected"})
    redis_conn.zadd(keys.dead_letters, {first: 1})
    # the same enqueue time: only the timeline tells which came first
    redis_conn.hset(keys.event(second), "enqueued_at",
                    redis_conn.hget(keys.event(first), "enqueued_at"))

    redis_conn.set(keys.lease(slot), "a-worker", px=60_000)
    [waiting] = Replayer(redis_conn, settings, in_flight_wait=0.3).replay([first])
    assert (waiting.outcome, waiting.reason) == ("skipped", "in_flight")
    assert redis_conn.lrange(keys.mailbox(slot), 0, -1) == [second]

    redis_conn.delete(keys.lease(slot))
    [done] = Replayer(redis_conn, settings).replay([first])
    assert done.outcome == "queued" and done.later_pending == [second]
    assert redis_conn.lrange(keys.mailbox(slot), 0, -1) == [first, second]
    assert redis_conn.hget(keys.event(first), "state") == "pending"
    assert json.loads(json.dumps(done.as_dict()))["event_id"] == first
