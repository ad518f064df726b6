"""`monitao-pd status`: one screen of the fleet, `--json`, and exit 1 when the oldest
pending event is older than the threshold (an alert on the alerting)."""

from __future__ import annotations

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
from worker.delivery import endpoint_id


def test_a_running_fleet_with_dead_letters(
    cli_env: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet.sim.set_faults(force_status=400)
    [rejected] = fleet.producer.send_many([event(1, 60, "trigger")])
    fleet.wait_final([rejected])
    fleet.sim.set_faults(force_status=None)
    delivered = fleet.producer.send_many([event(1, 61, "trigger"), event(1, 61, "resolve")])
    fleet.wait_final(delivered)

    status = wait_until(lambda: (s := run_json(capsys, "status"))["workers"] and s,
                        timeout=20, message="the worker to answer a ping")
    assert len(status["workers"]) == 1
    assert status["pending_events"] == 0 and status["oldest_pending_age_seconds"] is None
    assert status["dead_letters"] == {"rejected": 1} and status["dead_letters_total"] == 1
    assert status["in_flight"] == 0 and status["destinations_waiting"] == []
    assert status["destinations"]["prod"]["circuit"] == "closed"
    assert status["healthy"] is True and status["verdict"] == "nothing pending"

    code, out, _ = run(capsys, "status")
    assert code == 0
    assert "workers online" in out and "dead letters    1: rejected 1" in out
    assert "circuits        prod closed, staging closed" in out
    assert out.rstrip().endswith("OK: nothing pending")


def test_without_workers_pending_events_age_and_the_threshold(
    cli_env: Path, redis_url: str, prefix: str, destinations, redis_conn: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = load_settings(redis_url=redis_url, key_prefix=prefix)
    keys = Keyspace(prefix)
    app = create_app(settings, destinations)
    with AlertProducer(settings, destinations=destinations, redis=redis_conn,
                       celery_app=app) as producer:
        first = producer.send_many([event(2, 62, "trigger"), event(2, 62, "resolve")])
        producer.send_many([event(2, 63, "trigger", destination="staging")])
    app.close()
    # a worker holding one key, another backing off, staging cooling down after a 429,
    # prod's endpoint circuit open, one key waiting for prod's rate budget
    now = timeline.redis_millis(redis_conn)
    redis_conn.set(keys.lease(slot_of("prod", "monitao-monitor-2-incident-62")), "t", px=60_000)
    redis_conn.set(keys.hold(slot_of("staging", "monitao-monitor-2-incident-63")), "1",
                   px=60_000)
    redis_conn.hset(keys.cooldown("staging"), "until", now + 60_000)
    redis_conn.hset(keys.circuit(endpoint_id(destinations["prod"].url)),
                    mapping={"failures": 10, "open_until": now + 60_000, "interval": 5000})
    redis_conn.zadd(keys.rate_waiting("prod"), {"prod/x": now})

    status = run_json(capsys, "status", "--no-ping")
    assert status["workers"] is None and status["workers_error"] == "not asked"
    assert status["pending_events"] == 3 and status["scheduled_keys"] == 2
    assert status["destinations"]["prod"]["pending_events"] == 2
    assert status["in_flight"] == 1 and status["backing_off"] == 1
    assert status["oldest_pending_event"] == first[0]
    assert status["queue_length"] == 2  # the producer published one task per key
    assert status["destinations_waiting"] == ["prod", "staging"]
    assert status["destinations"]["staging"]["cooling_down"] is True
    assert status["destinations"]["prod"]["circuit"] == "open"
    assert status["destinations"]["prod"]["rate_waiting_keys"] == 1

    code, out, _ = run(capsys, "status", "--no-ping")
    assert code == 0
    assert "pending events  3 in 2 key(s)" in out
    assert "staging (429 cooldown" in out and "prod (1 key(s) waiting for the rate budget" in out
    assert "circuit open" in out

    wait_until(lambda: run_json(capsys, "status", "--no-ping")["oldest_pending_age_seconds"]
               > 0.2, timeout=10, message="the oldest event to be 0.2 s old")
    status = run_json(capsys, "status", "--no-ping", "--max-age", "0.2", expect=1)
    assert status["healthy"] is False and "over the threshold" in status["verdict"]
    code, out, _ = run(capsys, "status", "--no-ping", "--max-age", "0.2")
    assert code == 1 and "ALERT: oldest pending event is" in out
    assert run(capsys, "status", "--no-ping", "--max-age", "3600")[0] == 0


def test_no_worker_answering_shows_zero_workers(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = run_json(capsys, "status", "--timeout", "0.5")
    assert status["workers"] == [] and status["pending_events"] == 0
    code, out, _ = run(capsys, "status", "--timeout", "0.5")
    assert code == 0 and "workers online  0" in out
