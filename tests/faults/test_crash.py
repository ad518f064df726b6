"""Crash and restart safety with real processes: SIGKILL, Redis restart, outage, SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from config.connections import redis_client
from config.embedded_redis import EmbeddedRedis
from simulator import Simulator
from tests.conftest import wait_until
from tests.faults.conftest import fleet_for

pytestmark = pytest.mark.slow


def pairs(count: int, tag: str) -> list[dict]:
    events = []
    for n in range(count):
        incident = {"monitor_id": "7", "incident_id": f"{tag}{n}"}
        events += [{**incident, "action": "trigger", "summary": f"[DOWN] {n}"},
                   {**incident, "action": "resolve"}]
    return events


def assert_in_order(sim: Simulator, tag: str, count: int) -> None:
    """Each incident's trigger reached the simulator before its resolve, and it is resolved."""
    by_key: dict[str, list[str]] = {}
    for event in sim.received():
        by_key.setdefault(event["dedup_key"], []).append(event["event_action"])
    for n in range(count):
        actions = by_key[f"monitao-monitor-7-incident-{tag}{n}"]
        assert "trigger" not in actions[actions.index("resolve"):], (n, actions)
        assert actions[0] == "trigger", (n, actions)
    resolved = {i["dedup_key"] for i in sim.incidents() if i["status"] == "resolved"}
    assert len(resolved) == count


def test_sigkill_mid_delivery_loses_nothing_and_recovers_within_the_lease(
    fleet_env, spawn, sim, redis_conn
) -> None:
    # connect 1 s + read 3 s < lease 5 s: an interrupted slot is retried after at most 5 s
    env = fleet_env(lease_seconds=5, claim_seconds=5)
    victim = spawn(env, "victim", 4)
    spawn(env, "survivor", 4)
    fleet = fleet_for(env, sim, redis_conn)
    fleet.sim.set_faults(latency_ms=1500)
    ids = fleet.producer.send_many(pairs(12, "k"))
    # both workers busy: every thread of each holds a slot's lease mid-request
    wait_until(lambda: len(list(fleet.redis.scan_iter(fleet.keys.lease("*")))) >= 8,
               timeout=20, message="deliveries in flight on both workers")
    victim.kill(signal.SIGKILL)
    killed_at = time.time()
    victim.wait(timeout=10)
    fleet.sim.set_faults(latency_ms=50)

    assert set(fleet.wait_final(ids, timeout=90).values()) == {"delivered"}
    assert_in_order(fleet.sim, "k", 12)
    last = max(e["ts"] for e in fleet.sim.received())
    waited = last - killed_at
    print(f"\nlongest wait after SIGKILL: {waited:.1f} s (lease 5 s)")
    assert waited < 5 + 10


def test_redis_restart_with_aof_loses_nothing_and_workers_reconnect(
    fleet_env, spawn, sim, tmp_path: Path
) -> None:
    server = EmbeddedRedis(appendonly=True, directory=tmp_path / "redis").start()
    try:
        env = fleet_env(redis_url=server.url)
        worker = spawn(env, "w1", 4)
        client = redis_client(server.url)
        fleet = fleet_for(env, sim, client)
        fleet.sim.set_faults(latency_ms=2000)
        ids = fleet.producer.send_many(pairs(10, "r"))
        # the worker holds unacknowledged messages (every thread mid-request) when Redis
        # goes away: the case that kills Celery 5.7.0 workers (see pyproject.toml)
        wait_until(lambda: len(list(client.scan_iter(fleet.keys.lease("*")))) >= 4,
                   timeout=20, message="deliveries in flight")
        pid = worker.process.pid
        server.stop()  # SHUTDOWN: the append-only file is synced
        server.start()
        fleet.sim.set_faults(latency_ms=0)

        assert set(fleet.wait_final(ids, timeout=90).values()) == {"delivered"}
        assert_in_order(fleet.sim, "r", 10)
        assert worker.alive and worker.process.pid == pid, worker.log()[-2000:]
        assert "Unrecoverable error" not in worker.log()
        client.close()
    finally:
        server.cleanup()


def test_pagerduty_unreachable_then_back_delivers_everything_in_order(
    fleet_env, spawn, sim, redis_conn
) -> None:
    env = fleet_env(circuit_threshold=3, circuit_open_seconds=0.5,
                    circuit_max_open_seconds=2.0)
    spawn(env, "w1", 4)
    fleet = fleet_for(env, sim, redis_conn)
    port = int(sim.url.rsplit(":", 1)[1])
    sim.stop()  # connection refused from now on
    ids = fleet.producer.send_many(pairs(10, "u"))
    wait_until(lambda: fleet.redis.xlen(fleet.keys.circuit_log) >= 2, timeout=30,
               message="the circuit to open and a probe to fail")

    with Simulator(port=port) as back:
        back.set_faults(rate_limit=None)
        fleet.sim = back
        assert set(fleet.wait_final(ids, timeout=60).values()) == {"delivered"}
        assert_in_order(back, "u", 10)


def test_sigterm_is_a_warm_shutdown_that_loses_nothing(
    fleet_env, spawn, sim, redis_conn
) -> None:
    env = fleet_env()
    worker = spawn(env, "w1", 4)
    fleet = fleet_for(env, sim, redis_conn)
    fleet.sim.set_faults(latency_ms=700)
    ids = fleet.producer.send_many(pairs(8, "t"))
    wait_until(lambda: len(fleet.sim.requests()) >= 1, timeout=20, message="a first delivery")
    worker.kill(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert "Warm shutdown" in worker.log()
    states = {i: fleet.state(i) for i in ids}
    assert set(states.values()) <= {"pending", "delivered"}

    fleet.sim.set_faults(latency_ms=0)
    spawn(env, "w2", 4)
    assert set(fleet.wait_final(ids, timeout=60).values()) == {"delivered"}
    assert_in_order(fleet.sim, "t", 8)
