"""The intake stream, fed by `redis-cli` as a producer in any language would: entries are
enqueued as `send()` enqueues them, in stream order, once; invalid ones become `invalid`
dead letters with their raw bytes; a consumer SIGKILLed with entries pending loses and
doubles nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import redis

from config.keyspace import Keyspace
from config.settings import Settings, load_settings
from producer.intake import IntakeConsumer
from producer.producer import AlertProducer
from tests.cli.operate.support import run_json
from tests.conftest import Fleet, wait_until
from worker import timeline

REPO = Path(__file__).resolve().parents[2]
REDIS_CLI = shutil.which("redis-cli")
needs_redis_cli = pytest.mark.skipif(
    REDIS_CLI is None, reason="redis-cli is not installed: the tests use it as the producer")


def xadd(redis_url: str, prefix: str, *fields: str | bytes) -> str:
    """`redis-cli XADD {prefix}intake * FIELD VALUE ...`; the new entry's id."""
    assert REDIS_CLI is not None
    done = subprocess.run([REDIS_CLI, "-u", redis_url, "XADD", f"{prefix}intake", "*",
                           *fields], capture_output=True, check=True, timeout=10)
    return done.stdout.decode().strip()


def event(incident: str, action: str, **extra: object) -> str:
    body: dict[str, object] = {"action": action, "monitor_id": "77", "incident_id": incident,
                               "destination": "prod", **extra}
    if action == "trigger":
        body.setdefault("summary", f"[DOWN] from the stream, incident {incident}")
    return json.dumps(body)


def received(fleet: Fleet, incident: str) -> list[str]:
    return [e["event_action"] for e in fleet.sim.received()
            if e["dedup_key"] == f"monitao-monitor-77-incident-{incident}"]


@needs_redis_cli
def test_entries_from_redis_cli_are_delivered_in_order_and_invalid_ones_dead_lettered(
    fleet: Fleet, redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str],
    cli_env: Path,
) -> None:
    ids = []
    for incident in ("s1", "s2"):
        ids.append(xadd(redis_url, prefix, "event", event(incident, "trigger",
                                                          event_id=f"evt-{incident}-t")))
        ids.append(xadd(redis_url, prefix, "event", event(incident, "resolve")))
    bad_json = xadd(redis_url, prefix, "event", '{"action": "trigger", "monitor_id": ')
    bad_event = xadd(redis_url, prefix, "event", event("s3", "trigger", summary=None,
                                                       level="no-such-level"))
    no_field = xadd(redis_url, prefix, "payload", "hello")
    not_utf8 = xadd(redis_url, prefix, "event", b'{"action": "trigger", "summary": "\xff\xfe"}')

    for incident in ("s1", "s2"):
        wait_until(lambda incident=incident: received(fleet, incident) == ["trigger", "resolve"],
                   30, message=f"incident {incident} delivered in order")
    keys = fleet.keys
    wait_until(lambda: fleet.redis.xlen(keys.intake) == 0, 10, message="the stream emptied")
    assert fleet.redis.xpending(keys.intake, "fleet")["pending"] == 0
    # the event id given is kept (idempotency works as for send())
    assert fleet.state("evt-s1-t") == "delivered"

    letters = {e["event_id"]: e for e in run_json(capsys, "dlq", "list")}
    assert set(letters) == {f"intake-{i}" for i in (bad_json, bad_event, no_field, not_utf8)}
    assert {e["reason"] for e in letters.values()} == {"invalid"}
    assert letters[f"intake-{bad_event}"]["incident_id"] == "s3"
    shown = run_json(capsys, "dlq", "show", f"intake-{bad_event}")
    assert shown["origin"] == f"intake stream entry {bad_event}"
    assert shown["errors"] == [  # every problem, as send() names them
        "summary: required for a trigger",
        "level: 'no-such-level' is not in destination 'prod''s severity_map "
        "(critical, error, info, major, minor, warning)"]
    assert json.loads(shown["raw"])["level"] == "no-such-level"
    shown = run_json(capsys, "dlq", "show", f"intake-{bad_json}")
    assert shown["raw"] == '{"action": "trigger", "monitor_id": '
    assert shown["errors"][0].startswith("event: not valid JSON")
    shown = run_json(capsys, "dlq", "show", f"intake-{no_field}")
    assert shown["errors"] == ["event: the entry has no 'event' field (fields: payload)"]
    assert shown["raw"] == '{"payload": "hello"}'
    shown = run_json(capsys, "dlq", "show", f"intake-{not_utf8}")
    assert shown["raw"] == '{"action": "trigger", "summary": "\\xff\\xfe"}'  # bytes as \xNN


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, prefix: str,
            routing_key: str, sim) -> Path:
    config = tmp_path / "destinations.toml"
    config.write_text(f'[destinations.prod]\nrouting_key_env = "PD_KEY_PROD"\n'
                      f'events_url = "{sim.events_url}"\nrate_limit_per_minute = 100000\n',
                      encoding="utf-8")
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", redis_url)
    monkeypatch.setenv("MONITAO_PD_KEY_PREFIX", prefix)
    monkeypatch.setenv("MONITAO_PD_CONFIG", str(config))
    monkeypatch.setenv("PD_KEY_PROD", routing_key)
    return config


def test_a_redelivered_entry_is_a_no_op(settings: Settings, destinations, redis_conn) -> None:
    producer = AlertProducer(settings, destinations=destinations, redis=redis_conn)
    consumer = IntakeConsumer(producer, name="twice")
    keys = Keyspace(settings.key_prefix)
    try:
        consumer.ensure_group()
        valid = redis_conn.xadd(keys.intake, {"event": event("r1", "trigger")})
        invalid = redis_conn.xadd(keys.intake, {"event": "[1, 2"})
        entries = consumer._read(">")
        assert [entry_id for entry_id, _ in entries] == [valid, invalid]
        # the same entries twice, as after a crash between the enqueue and the ack
        redis_conn.xadd(keys.intake, {"event": "{}"})  # keep the stream alive after XDEL
        assert consumer.process(entries) == 2
        assert consumer.process(entries) == 2
        stages = [e["stage"] for e in timeline.read(redis_conn, keys, "r1")]
        assert stages == ["enqueued"]  # enqueued once: the derived event id is the same
        assert redis_conn.zcard(keys.dead_letters) == 1
    finally:
        consumer.stop()
        producer.celery.close()


@pytest.mark.slow
@needs_redis_cli
def test_a_consumer_sigkilled_with_entries_pending_loses_and_doubles_nothing(
    make_fleet, redis_url: str, prefix: str, cli_env: Path, routing_key: str, sim,
) -> None:
    # Five triggers taken by a consumer that enqueued two of them and was then killed
    # before acknowledging any: they stay pending in the group under its name.
    triggers = [xadd(redis_url, prefix, "event", event(f"k{n}", "trigger")) for n in range(5)]
    env = {**os.environ, "MONITAO_PD_REDIS_URL": redis_url, "MONITAO_PD_KEY_PREFIX": prefix,
           "MONITAO_PD_CONFIG": str(cli_env), "PD_KEY_PROD": routing_key,
           "MONITAO_PD_INTAKE_LEASE_SECONDS": "1"}
    holder = subprocess.Popen([sys.executable, "-m", "tests.producer.intake_holder", "2"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding 5"
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = Keyspace(prefix)
        pending = client.xpending(keys.intake, "fleet")
        assert pending["pending"] == 5 and pending["consumers"][0]["name"] == "doomed"
        # Their resolves come after the crash: each must still follow its trigger.
        for n in range(5):
            xadd(redis_url, prefix, "event", event(f"k{n}", "resolve"))

        with make_fleet(intake_lease_seconds=1) as fleet:
            for n in range(5):
                wait_until(lambda n=n: received(fleet, f"k{n}") == ["trigger", "resolve"],
                           30, message=f"k{n}'s trigger then resolve")
            wait_until(lambda: client.xlen(keys.intake) == 0, 10, message="the stream emptied")
            assert client.xpending(keys.intake, "fleet")["pending"] == 0
            assert "doomed" not in {c["name"] for c in client.xinfo_consumers(keys.intake,
                                                                             "fleet")}
            enqueued = Counter(e["action"] for n in range(5)
                               for e in timeline.read(client, keys, f"k{n}")
                               if e["stage"] == "enqueued")
            assert enqueued == {"trigger": 5, "resolve": 5}  # nothing doubled
            assert len(triggers) == 5 and len(fleet.sim.received()) == 10
    finally:
        client.close()


def test_settings_bound_the_lease() -> None:
    assert load_settings(intake_lease_seconds=1).intake_lease_seconds == 1
    with pytest.raises(Exception, match="INTAKE_LEASE_SECONDS"):
        load_settings(intake_lease_seconds=0.5)



def test_an_entry_that_cannot_be_stored_is_dead_lettered_and_the_rest_go_on(
    settings: Settings, destinations, redis_conn
) -> None:
    producer = AlertProducer(settings, destinations=destinations, redis=redis_conn)
    consumer = IntakeConsumer(producer, name="deep")
    keys = Keyspace(settings.key_prefix)
    deep = '{"a":' * 300 + "1" + "}" * 300  # JSON can hold it; the stored event could not
    try:
        consumer.ensure_group()
        bad = redis_conn.xadd(keys.intake, {"event": event("d1", "trigger")[:-1]
                                            + f', "details": {deep}}}'})
        good = redis_conn.xadd(keys.intake, {"event": event("d2", "trigger")})
        assert consumer.process(consumer._read(">")) == 2
        assert [e["stage"] for e in timeline.read(redis_conn, keys, "d2")] == ["enqueued"]
        record = redis_conn.hgetall(keys.event(f"intake-{bad}"))
        assert record["reason"] == "invalid" and record["incident_id"] == "d1"
        assert json.loads(record["errors"])[0].startswith("details: nests deeper than 32")
        assert redis_conn.xlen(keys.intake) == 0 and good
    finally:
        consumer.stop()
        producer.celery.close()
