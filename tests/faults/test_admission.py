"""Fleet-wide admission with real worker processes: the rate budget, 429 cooldown, circuit."""

from __future__ import annotations

import time

import pytest

from tests.conftest import wait_until
from tests.faults.conftest import fleet_for
from worker import timeline

pytestmark = pytest.mark.slow


def trigger(n: int, **extra: object) -> dict:
    return {"action": "trigger", "monitor_id": "1", "incident_id": f"n{n}",
            "summary": f"[DOWN] {n}", **extra}


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_two_workers_stay_within_the_budget_oldest_first(
    fleet_env, spawn, sim, redis_conn
) -> None:
    env = fleet_env(rate_limit=6, rate_window_seconds=2)
    spawn(env, "w1", 4)
    spawn(env, "w2", 4)
    fleet = fleet_for(env, sim, redis_conn)
    ids = [fleet.producer.send(trigger(n)) for n in range(20)]

    assert set(fleet.wait_final(ids, timeout=60).values()) == {"delivered"}
    requests = fleet.sim.requests()
    assert all(r["status"] == 202 for r in requests)
    assert len(requests) == 20
    # PagerDuty's rule, scaled to the test's 2 s window: never more than 6 in any window
    assert max_in_window([r["ts"] for r in requests], 2.0) <= 6
    # waiting for the budget uses no attempt: every event went through on its first try
    assert [int(fleet.redis.hget(fleet.keys.event(i), "attempts")) for i in ids] == [1] * 20
    waited = [e for n in range(20) for e in timeline.read(fleet.redis, fleet.keys, f"n{n}")
              if e["stage"] == "rate_limited"]
    assert waited and all(e["reason"] == "rate_limit" for e in waited)
    # oldest first: no incident is overtaken by more than one window's worth of later ones
    arrival = [r["dedup_key"] for r in requests]
    for n in range(20):
        assert arrival.index(f"monitao-monitor-1-incident-n{n}") <= n + 6


def test_a_429_cools_the_whole_destination_down(fleet_env, spawn, sim, redis_conn) -> None:
    env = fleet_env(cooldown_base_seconds=2.0)
    spawn(env, "w1", 4)
    spawn(env, "w2", 4)
    fleet = fleet_for(env, sim, redis_conn)
    fleet.sim.set_faults(fail_next=1, error_status=429, latency_ms=20)
    ids = [fleet.producer.send(trigger(n)) for n in range(40)]

    assert set(fleet.wait_final(ids, timeout=60).values()) == {"delivered"}
    requests = fleet.sim.requests()
    [throttled] = [r for r in requests if r["status"] == 429]
    accepted = sorted(r["dedup_key"] for r in requests if r["status"] == 202)
    assert accepted == sorted({r["dedup_key"] for r in requests})  # each one exactly once
    cooled = [e for n in range(40) for e in timeline.read(fleet.redis, fleet.keys, f"n{n}")
              if e["stage"] == "rate_limited" and e.get("reason") == "cooldown"]
    assert cooled
    until = min(int(e["retry_at"]) for e in cooled) / 1000  # Redis's clock, this host's
    assert until - throttled["ts"] >= 1.5  # the 2 s cooldown, less what the write took
    # What was in flight, or admitted in the few ms before the 429's cooldown was written,
    # lands just after it; then nothing until the cooldown ends, and most of the 40 after.
    assert not [r for r in requests if throttled["ts"] + 0.3 < r["ts"] < until - 0.01]
    assert len([r for r in requests if r["ts"] >= until - 0.01]) >= 30


def test_an_outage_opens_the_circuit_then_a_probe_closes_it(
    fleet_env, spawn, sim, redis_conn
) -> None:
    env = fleet_env(circuit_threshold=3, circuit_open_seconds=0.5,
                    circuit_max_open_seconds=2.0)
    spawn(env, "w1", 4)
    spawn(env, "w2", 4)
    fleet = fleet_for(env, sim, redis_conn)
    fleet.sim.set_faults(force_status=503)
    events = []
    for n in range(15):
        events += [trigger(n), {"action": "resolve", "monitor_id": "1", "incident_id": f"n{n}"}]
    ids = fleet.producer.send_many(events)

    def transitions() -> list[str]:
        return [f["event"] for _, f in fleet.redis.xrange(fleet.keys.circuit_log)]

    wait_until(lambda: transitions().count("reopened") >= 3, timeout=30,
               message="three failed probes")
    outage_requests = len(fleet.sim.requests())
    # without the circuit, 15 keys retrying every 50-400 ms would have sent hundreds
    assert outage_requests <= 3 + 8 + 4, outage_requests
    fleet.sim.set_faults(force_status=None)
    started = time.monotonic()
    assert set(fleet.wait_final(ids, timeout=30).values()) == {"delivered"}
    assert time.monotonic() - started < 10
    assert transitions()[0] == "opened" and transitions()[-1] == "closed"
    for n in range(15):
        actions = [e["event_action"] for e in fleet.sim.received()
                   if e["dedup_key"].endswith(f"-n{n}")]
        assert actions == ["trigger", "resolve"], (n, actions)
