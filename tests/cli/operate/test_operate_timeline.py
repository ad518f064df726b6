"""`monitao-pd timeline`: every stage, the worker and Celery task id on each attempt, the
derived figures, retention by age, and incidents with hundreds of entries."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from config.keyspace import Keyspace
from config.settings import load_settings
from producer import AlertProducer
from tests.cli.operate.support import event, run, run_json
from tests.conftest import Fleet
from worker import timeline
from worker.app import create_app


def test_every_stage_with_worker_and_task_id_and_derived_figures(
    cli_env: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet.sim.set_faults(fail_next=1)
    ids = fleet.producer.send_many([event(5, 901, "trigger"), event(5, 901, "resolve")])
    assert set(fleet.wait_final(ids).values()) == {"delivered"}

    entries = run_json(capsys, "timeline", "901")
    assert [(e["stage"], e["event_id"]) for e in entries] == [
        ("enqueued", ids[0]), ("enqueued", ids[1]),
        ("attempt", ids[0]), ("retry_scheduled", ids[0]),
        ("attempt", ids[0]), ("delivered", ids[0]),
        ("attempt", ids[1]), ("delivered", ids[1]),
    ]
    attempts = [e for e in entries if e["stage"] == "attempt"]
    assert [(a["attempt"], a["http_status"]) for a in attempts] == [(1, 500), (2, 202), (1, 202)]
    for attempt in attempts:
        assert attempt["worker"] and len(attempt["task_id"]) == 36  # a Celery task uuid
        assert attempt["latency_ms"] >= 0
    retry = entries[3]
    assert retry["delay_ms"] > 0 and retry["retry_at"] > 0 and retry["reason"] == "backoff"

    figures = run_json(capsys, "timeline", "901", "--summary")
    millis = [timeline.entry_millis(e["id"]) for e in entries]
    assert figures["attempts"] == 3 and figures["retries_scheduled"] == 1
    assert figures["events"] == 2 and figures["states"] == {"delivered": 2}
    assert figures["enqueue_to_first_delivery_ms"] == millis[5] - millis[0]
    assert figures["trigger_to_resolve_ms"] == millis[7] - millis[5]
    [key] = figures["keys"]
    assert key["dedup_key"] == "monitao-monitor-5-incident-901" and key["attempts"] == 3

    code, out, _ = run(capsys, "timeline", "901")
    assert code == 0
    for attempt in attempts:  # a Flower task and a timeline line can be matched
        assert f"task {attempt['task_id']}]" in out
    assert "try 1: HTTP 500" in out and "retry in " in out and "(backoff)" in out
    assert "attempts: 3 (retries scheduled 1" in out
    assert "incident 901: 8 entries, 2 event(s): 2 accepted by PagerDuty" in out


def test_derived_figures_per_key_and_without_a_resolve() -> None:
    def e(ms: int, stage: str, action: str, key: str, event_id: str) -> dict:
        return {"id": f"{ms}-0", "ts": str(ms), "stage": stage, "action": action,
                "destination": key, "dedup_key": "k", "event_id": event_id}

    entries = [
        e(1000, "enqueued", "trigger", "prod", "a"), e(1000, "enqueued", "trigger", "staging", "b"),
        e(1040, "attempt", "trigger", "prod", "a"), e(1040, "delivered", "trigger", "prod", "a"),
        e(1100, "attempt", "trigger", "staging", "b"),
        e(1100, "dead_lettered", "trigger", "staging", "b"),
        e(5000, "enqueued", "resolve", "prod", "c"), e(5300, "attempt", "resolve", "prod", "c"),
        e(5300, "delivered", "resolve", "prod", "c"),
    ]
    figures = timeline.summarize("i", entries)
    assert figures["enqueue_to_first_delivery_ms"] == 40
    assert figures["trigger_to_resolve_ms"] == 5300 - 1040
    assert figures["states"] == {"dead_lettered": 1, "delivered": 2}
    prod, staging = figures["keys"]
    assert prod["trigger_to_resolve_ms"] == 4260 and prod["attempts"] == 2
    assert staging["enqueue_to_first_delivery_ms"] is None
    assert staging["trigger_to_resolve_ms"] is None and staging["states"] == {"dead_lettered": 1}


def test_hundreds_of_entries_in_table_and_json(
    cli_env: Path, redis_url: str, prefix: str, destinations, redis_conn: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = load_settings(redis_url=redis_url, key_prefix=prefix)
    app = create_app(settings, destinations)
    with AlertProducer(settings, destinations=destinations, redis=redis_conn,
                       celery_app=app) as producer:
        events = [event(7, "big", "trigger" if n % 2 == 0 else "resolve")
                  for n in range(650)]  # more than one page of the stream (500)
        ids = producer.send_many(events)
    app.close()

    entries = run_json(capsys, "timeline", "big")
    assert [e["event_id"] for e in entries] == ids
    assert {e["stage"] for e in entries} == {"enqueued"}

    code, out, _ = run(capsys, "timeline", "big")
    assert code == 0
    rows = [line for line in out.splitlines() if "  enqueued  " in line]
    assert len(rows) == 650
    assert "incident big: 650 entries, 650 event(s): 650 pending" in out


def test_retention_hides_entries_older_than_the_setting(
    cli_env: Path, prefix: str, redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = Keyspace(prefix)
    now = timeline.redis_millis(redis_conn)
    old = timeline.entry("enqueued", "old-event", "trigger", "prod", "k")
    new = timeline.entry("enqueued", "new-event", "resolve", "prod", "k")
    redis_conn.xadd(keys.timeline("kept"), dict(zip(old[::2], old[1::2], strict=True)),
                    id=f"{now - 120_000}-0")
    redis_conn.xadd(keys.timeline("kept"), dict(zip(new[::2], new[1::2], strict=True)))

    assert [e["event_id"] for e in run_json(capsys, "timeline", "kept")] == [
        "old-event", "new-event"]
    monkeypatch.setenv("MONITAO_PD_TIMELINE_RETENTION_SECONDS", "60")
    assert [e["event_id"] for e in run_json(capsys, "timeline", "kept")] == ["new-event"]

    redis_conn.xadd(keys.timeline("gone"), dict(zip(old[::2], old[1::2], strict=True)),
                    id=f"{now - 120_000}-0")
    code, _, err = run(capsys, "timeline", "gone")
    assert code == 2 and "no timeline for incident 'gone'" in err


def test_enqueue_sets_the_retention_as_the_timeline_ttl(
    cli_env: Path, redis_url: str, prefix: str, destinations, redis_conn: redis.Redis,
) -> None:
    settings = load_settings(redis_url=redis_url, key_prefix=prefix,
                             timeline_retention_seconds=120)
    app = create_app(settings, destinations)
    with AlertProducer(settings, destinations=destinations, redis=redis_conn,
                       celery_app=app) as producer:
        producer.send(event(1, "ttl", "trigger"))
    app.close()
    ttl = redis_conn.pttl(Keyspace(prefix).timeline("ttl"))
    assert 100_000 < ttl <= 120_000
