"""Prometheus metrics: the functions the delivery pass calls, the fleet-wide gauges read
from Redis at scrape time, the exporter over HTTP, and several worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from config.embedded_redis import free_port
from config.keyspace import Keyspace, slot_of
from config.settings import load_settings
from producer import AlertProducer
from tests.conftest import FAST, Fleet, wait_until
from tests.faults.conftest import fleet_for
from tests.faults.processes import WorkerProcess, settings_env
from worker import metrics, timeline
from worker.app import create_app
from worker.delivery import endpoint_id

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample the exporter on `port` serves: (name, sorted labels) -> value."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def exporter() -> Iterator[Callable[..., metrics.Exporter]]:
    started: list[metrics.Exporter] = []

    def start(collector: metrics.RedisStateCollector | None = None) -> metrics.Exporter:
        running = metrics.start_exporter(free_port(), "127.0.0.1", collector)
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


def test_attempts_finals_and_histograms_as_recorded(exporter) -> None:
    dest = f"d{uuid.uuid4().hex[:8]}"  # counters are per process: a label of this test's own
    for latency in (0.02, 0.02, 0.02):
        metrics.record_attempt(dest, "delivered", latency)
    metrics.record_attempt(dest, "retry", 0.5, 429)
    metrics.record_attempt(dest, "permanent", 0.003, 400)
    metrics.record_final(dest, "delivered", "", 1_000, 2_500)
    metrics.record_final(dest, "delivered", "", 1_000, 1_200)
    metrics.record_final(dest, "dead_lettered", "rejected", 1_000, 1_010)

    samples = scrape(exporter().port)
    assert value(samples, "monitao_pd_attempts_total", destination=dest, outcome="delivered") == 3
    assert value(samples, "monitao_pd_attempts_total", destination=dest, outcome="retry") == 1
    assert value(samples, "monitao_pd_attempts_total", destination=dest,
                 outcome="permanent") == 1
    assert value(samples, "monitao_pd_throttled_attempts_total", destination=dest) == 1
    name = "monitao_pd_attempt_duration_seconds"
    assert value(samples, f"{name}_count", destination=dest) == 5
    assert value(samples, f"{name}_sum", destination=dest) == pytest.approx(0.563)
    assert value(samples, f"{name}_bucket", destination=dest, le="0.025") == 4
    assert value(samples, f"{name}_bucket", destination=dest, le="0.5") == 5

    assert value(samples, "monitao_pd_events_finished_total", destination=dest,
                 state="delivered", reason="") == 2
    assert value(samples, "monitao_pd_events_finished_total", destination=dest,
                 state="dead_lettered", reason="rejected") == 1
    name = "monitao_pd_enqueue_to_delivered_seconds"
    assert value(samples, f"{name}_count", destination=dest) == 2  # delivered ones only
    assert value(samples, f"{name}_sum", destination=dest) == pytest.approx(1.7)
    assert value(samples, f"{name}_bucket", destination=dest, le="0.25") == 1
    assert value(samples, f"{name}_bucket", destination=dest, le="2.5") == 2


def test_fleet_gauges_read_from_redis_at_scrape_time(
    exporter, redis_url: str, prefix: str, destinations, redis_conn: redis.Redis
) -> None:
    settings = load_settings(redis_url=redis_url, key_prefix=prefix)
    keys = Keyspace(prefix)
    app = create_app(settings, destinations)
    with AlertProducer(settings, destinations=destinations, redis=redis_conn,
                       celery_app=app) as producer:
        producer.send_many([
            {"action": "trigger", "monitor_id": "1", "incident_id": n, "summary": "down"}
            for n in ("a", "a", "b")])
    app.close()
    now = timeline.redis_millis(redis_conn)
    redis_conn.zadd(keys.schedule, {slot_of("prod", "monitao-monitor-1-incident-b"): 0})
    redis_conn.set(keys.lease(slot_of("prod", "monitao-monitor-1-incident-a")), "t", px=60_000)
    for event_id, state, reason in (("x1", "dead_lettered", "rejected"),
                                    ("x2", "dead_lettered", "rejected"),
                                    ("x3", "dead_lettered", "expired"),
                                    ("x4", "pending", "rejected")):
        redis_conn.hset(keys.event(event_id), mapping={"state": state, "reason": reason,
                                                       "slot": "prod/k"})
        redis_conn.zadd(keys.dead_letters, {event_id: now})
    redis_conn.hset(keys.cooldown("prod"), "until", now + 30_000)
    redis_conn.zadd(keys.rate_waiting("prod"), {"prod/k1": 1, "prod/k2": 2})
    redis_conn.hset(keys.circuit(endpoint_id(destinations["prod"].url)),
                    mapping={"failures": 12, "open_until": now + 60_000})

    collector = metrics.RedisStateCollector(redis_conn, keys, destinations,
                                            broker=redis_conn, min_interval=0)
    samples = scrape(exporter(collector).port)
    assert value(samples, "monitao_pd_redis_up") == 1
    assert value(samples, "monitao_pd_pending_events", destination="prod") == 3
    assert value(samples, "monitao_pd_scheduled_keys") == 2
    assert value(samples, "monitao_pd_due_keys") == 1
    assert value(samples, "monitao_pd_keys_in_flight") == 1
    assert value(samples, "monitao_pd_queue_length") == 2
    assert value(samples, "monitao_pd_oldest_pending_age_seconds") >= 0
    assert value(samples, "monitao_pd_dead_letters", reason="rejected") == 2
    assert value(samples, "monitao_pd_dead_letters", reason="expired") == 1
    assert value(samples, "monitao_pd_replays_pending") == 1
    assert value(samples, "monitao_pd_destination_cooling_down", destination="prod") == 1
    assert 0 < value(samples, "monitao_pd_destination_cooldown_remaining_seconds",
                     destination="prod") <= 30
    assert value(samples, "monitao_pd_rate_limit_waiting_keys", destination="prod") == 2
    assert value(samples, "monitao_pd_rate_limit_per_minute", destination="prod") == 100_000
    assert value(samples, "monitao_pd_circuit_state", destination="prod") == 1  # open
    assert value(samples, "monitao_pd_circuit_failures", destination="prod") == 12

    # read at scrape time, not at start: the state changes, the next scrape shows it
    redis_conn.hset(keys.circuit(endpoint_id(destinations["prod"].url)), "open_until", now)
    redis_conn.delete(keys.cooldown("prod"))
    samples = scrape(exporter(collector).port)
    assert value(samples, "monitao_pd_circuit_state", destination="prod") == 2  # half-open
    assert value(samples, "monitao_pd_destination_cooling_down", destination="prod") == 0


def test_unreachable_redis_is_redis_up_0_not_an_error(exporter, prefix: str) -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5, decode_responses=True)
    samples = scrape(exporter(metrics.RedisStateCollector(dead, Keyspace(prefix), {})).port)
    assert value(samples, "monitao_pd_redis_up") == 0
    assert not [name for name, _ in samples if name.startswith("monitao_pd_pending")]


def test_the_worker_bootstep_serves_metrics_on_metrics_port(make_fleet) -> None:
    port = free_port()
    with make_fleet(metrics_port=port, metrics_address="127.0.0.1") as fleet:
        ids = fleet.producer.send_many([
            {"action": "trigger", "monitor_id": "1", "incident_id": "m", "summary": "down"}])
        fleet.wait_final(ids)
        samples = wait_until(lambda: _try_scrape(port), timeout=10, message="the exporter")
        assert value(samples, "monitao_pd_redis_up") == 1
        assert value(samples, "monitao_pd_circuit_state", destination="prod") == 0
        assert value(samples, "monitao_pd_pending_events", destination="prod") == 0
    with pytest.raises(httpx.ConnectError):  # stopped with the worker, port released
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def _try_scrape(port: int) -> Samples | None:
    try:
        return scrape(port)
    except httpx.ConnectError:
        return None


# -- several worker processes --------------------------------------------------------------



@pytest.fixture
def two_workers(tmp_path: Path, redis_url: str, prefix: str, sim, routing_key: str,
                redis_conn: redis.Redis) -> Iterator[tuple[Fleet, list[int]]]:
    """Two `monitao-pd worker` processes, each with its exporter; a producer for them."""
    config = tmp_path / "destinations.toml"
    config.write_text(f'[destinations.prod]\nrouting_key_env = "PD_KEY_TEST"\n'
                      f'events_url = "{sim.events_url}"\nrate_limit_per_minute = 100000\n',
                      encoding="utf-8")
    ports, workers = [free_port(), free_port()], []
    try:
        for n, port in enumerate(ports):
            env = {k: v for k, v in os.environ.items() if not k.startswith("MONITAO_PD_")}
            env.update(settings_env(redis_url=redis_url, key_prefix=prefix, config=config,
                                    metrics_port=port, metrics_address="127.0.0.1", **FAST))
            env["PD_KEY_TEST"] = routing_key
            workers.append(WorkerProcess(env, tmp_path, f"m{n}", concurrency=4).start())
        yield fleet_for(workers[0].env, sim, redis_conn), ports
    finally:
        for process in workers:
            process.stop()


@pytest.mark.slow
def test_two_worker_processes_gauges_agree_and_counters_add_up(two_workers) -> None:
    fleet, ports = two_workers
    fleet.sim.set_faults(fail_next=3)
    events = []
    for n in range(15):
        events += [{"action": "trigger", "monitor_id": "1", "incident_id": f"p{n}",
                    "summary": "down"}, {"action": "resolve", "monitor_id": "1",
                                         "incident_id": f"p{n}"}]
    ids = fleet.producer.send_many(events)
    assert set(fleet.wait_final(ids, timeout=60).values()) == {"delivered"}
    fleet.sim.set_faults(force_status=400)
    rejected = fleet.producer.send_many([{"action": "trigger", "monitor_id": "1",
                                          "incident_id": "bad", "summary": "down"}])
    fleet.wait_final(rejected)

    def settled() -> list[Samples] | None:
        scraped = [scrape(port) for port in ports]
        # workers count an event just after its finish script: wait for all 31 counted too
        finished = sum(value(s, "monitao_pd_events_finished_total", destination="prod",
                             state=state, reason=reason) or 0
                       for s in scraped for state, reason in (("delivered", ""),
                                                              ("dead_lettered", "rejected")))
        return scraped if finished == 31 and all(
            value(s, "monitao_pd_dead_letters", reason="rejected") == 1 for s in scraped
        ) else None

    scraped = wait_until(settled, timeout=10, message="both exporters to see the dead letter")
    # fleet-wide gauges: the same from every worker (aggregate with max, not sum)
    for name in ("monitao_pd_scheduled_keys", "monitao_pd_replays_pending"):
        assert value(scraped[0], name) == value(scraped[1], name) == 0
    for s in scraped:
        assert value(s, "monitao_pd_pending_events", destination="prod") == 0
        assert value(s, "monitao_pd_circuit_state", destination="prod") == 0

    def total(name: str, **labels: str) -> float:
        return sum(value(s, name, **labels) or 0 for s in scraped)

    # per-process counters: each worker counts its own; summed they are the traffic
    assert total("monitao_pd_attempts_total", destination="prod", outcome="delivered") == 30
    assert total("monitao_pd_attempts_total", destination="prod", outcome="retry") == 3
    assert total("monitao_pd_attempts_total", destination="prod", outcome="permanent") == 1
    assert total("monitao_pd_attempt_duration_seconds_count", destination="prod") == 34
    assert total("monitao_pd_events_finished_total", destination="prod", state="delivered",
                 reason="") == 30
    assert total("monitao_pd_events_finished_total", destination="prod",
                 state="dead_lettered", reason="rejected") == 1
    assert total("monitao_pd_enqueue_to_delivered_seconds_count", destination="prod") == 30


CHILDREN = """
import multiprocessing, sys, urllib.request
from worker import metrics

def child(count):
    for _ in range(count):
        metrics.record_attempt("prod", "delivered", 0.01)

if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    children = [multiprocessing.Process(target=child, args=(n,)) for n in (2, 3)]
    for process in children:
        process.start()
    for process in children:
        process.join(30)
    exporter = metrics.start_exporter(0, "127.0.0.1")
    sys.stdout.write(urllib.request.urlopen(
        f"http://127.0.0.1:{exporter.port}/metrics", timeout=10).read().decode())
"""


def test_prefork_children_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """With the prefork pool deliveries run in children; PROMETHEUS_MULTIPROC_DIR lets the
    parent's exporter serve their sum."""
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", CHILDREN], env=env, capture_output=True,
                            text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    samples: Samples = {}
    for family in text_string_to_metric_families(result.stdout):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert value(samples, "monitao_pd_attempts_total", destination="prod",
                 outcome="delivered") == 5
    assert value(samples, "monitao_pd_attempt_duration_seconds_count", destination="prod") == 5
