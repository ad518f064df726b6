"""What an endpoint answers reaches Redis, the worker's log and the CLI made safe, with a
real `monitao-pd worker` process and the simulator answering 400 with text of its own:
a newline in PagerDuty's error forges no log line, and a routing key it echoes is masked
everywhere it is kept or shown."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import redis

from cli.main import main
from simulator import Simulator
from tests.conftest import wait_until
from tests.faults.conftest import fleet_for
from tests.faults.processes import WorkerProcess

pytestmark = pytest.mark.slow

# Celery's own line format, as a forged line would imitate it.
FORGED = "[2030-01-01 00:00:00,000: ERROR/MainProcess] forged: all events delivered"


def trigger(incident: str) -> dict[str, str]:
    return {"action": "trigger", "monitor_id": "31", "incident_id": incident,
            "summary": "[DOWN] example.com - HTTP 503"}


def test_a_newline_in_pagerdutys_error_forges_no_worker_log_line(
    fleet_env: Callable[..., dict[str, str]], spawn: Callable[..., WorkerProcess],
    sim: Simulator, redis_conn: redis.Redis,
) -> None:
    env = fleet_env()
    worker = spawn(env)
    fleet = fleet_for(env, sim, redis_conn)
    sim.set_faults(force_status=400, error_body={
        "status": "invalid event", "message": f"Event object is invalid\n{FORGED}\x1b[2J",
        "errors": [f"payload.summary\r\n{FORGED}"]})
    event_id = fleet.producer.send(trigger("forge-1"))
    assert fleet.wait_final([event_id]) == {event_id: "dead_lettered"}

    # the worker's WARNING for the dead letter carries PagerDuty's text
    log = wait_until(lambda: f"event {event_id}" in worker.log() and worker.log(), 10,
                     message="the worker's dead-letter line")
    [line] = [line for line in log.splitlines() if f"event {event_id} on " in line]
    assert "WARNING" in line and "ended dead_lettered: rejected HTTP 400: Event object is " \
        f"invalid\\n{FORGED}\\x1b[2J" in line
    assert not any(line.startswith(FORGED[:25]) for line in log.splitlines()), log[-3000:]
    assert "\x1b" not in log


def test_an_echoed_routing_key_is_masked_in_redis_the_log_and_every_command(
    fleet_env: Callable[..., dict[str, str]], spawn: Callable[..., WorkerProcess],
    sim: Simulator, redis_conn: redis.Redis, routing_key: str, prefix: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    env = fleet_env()
    worker = spawn(env)
    fleet = fleet_for(env, sim, redis_conn)
    sim.set_faults(force_status=400, error_body={
        "status": "invalid event",
        "message": "Invalid routing key {routing_key}; check the integration",
        "errors": ["routing_key '{routing_key}' not found",
                   {"field": "routing_key", "value": "{routing_key}"}]})
    echoed = httpx.post(sim.events_url, json={**trigger("x"), "routing_key": routing_key},
                        timeout=10).text
    assert routing_key in echoed  # the endpoint does echo it
    ids = fleet.producer.send_many([trigger("echo-1"), {**trigger("echo-1"),
                                                        "action": "resolve"}])
    assert set(fleet.wait_final(ids).values()) == {"dead_lettered"}

    for name, value in env.items():
        if name.startswith("MONITAO_PD_"):
            monkeypatch.setenv(name, value)
    outputs = {}
    for args in (["dlq", "list"], ["dlq", "list", "--json"], ["dlq", "show", ids[0]],
                 ["dlq", "show", ids[0], "--json"], ["timeline", "echo-1"],
                 ["timeline", "echo-1", "--json"], ["status"], ["status", "--json"],
                 ["replay", "--all", "--dry-run"],
                 ["test-destination", "prod", "--timeout", "30"],
                 ["test-destination", "prod", "--timeout", "30", "--json"]):
        code = main(args)
        captured = capsys.readouterr()
        outputs[" ".join(args)] = (code, captured.out + captured.err)
    code, shown = outputs[f"dlq show {ids[0]}"]
    assert code == 0 and "HTTP 400: Invalid routing key ********; check the integration" in shown
    assert "routing_key '********' not found" in shown
    code, tested = outputs["test-destination prod --timeout 30"]
    assert code == 1 and tested.count("FAILED: dead_lettered (rejected): HTTP 400: Invalid "
                                      "routing key ********") == 2

    stored = dump_values(fleet.redis, prefix)
    assert "Invalid routing key ********" in stored
    logged = worker.log()
    assert "Invalid routing key ********" in logged
    for where, text in [("redis", stored), ("worker log", logged),
                        *((f"monitao-pd {args}", out) for args, (_, out) in outputs.items())]:
        assert routing_key.lower() not in text.lower(), where


def dump_values(client: redis.Redis, prefix: str) -> str:
    """Every key under `prefix` and every value it holds, as one text."""
    parts = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = client.type(key)
        value: object
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            value = kind
        parts.append(f"{key} {value!r}")
    return "\n".join(parts)

