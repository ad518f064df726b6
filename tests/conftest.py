"""Shared fixtures: a real Redis (the local one, or an embedded one when none answers),
a key prefix per test that is wiped afterwards, the PagerDuty simulator over real HTTP,
and a fleet of real Celery worker threads."""

from __future__ import annotations

import os
import secrets
import string
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from config.connections import redis_client
from config.destinations import Destination, parse_destinations
from config.embedded_redis import EmbeddedRedis
from config.keyspace import Keyspace
from config.settings import Settings, load_settings
from producer import AlertProducer
from simulator import Simulator
from worker.app import create_app
from worker.context import FleetContext

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
# Test runs pick database 9 of a shared server, and a prefix of their own inside it.
TEST_DB_URL = "redis://127.0.0.1:6379/9"


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(interval)


def random_routing_key() -> str:
    """A routing key shaped like PagerDuty's (32 letters and digits), new for each test."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MONITAO_PD_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The local Redis on database 9, or a private embedded server when none answers."""
    probe = redis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=0.5)
    try:
        probe.ping()
        yield TEST_DB_URL
        return
    except redis.ConnectionError:
        pass
    finally:
        probe.close()
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    value = f"test-{uuid.uuid4().hex[:10]}:"
    yield value
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{value}*", count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    """A decoded client on the test Redis."""
    client = redis_client(redis_url)
    yield client
    client.close()


FAST = dict(
    retry_base_seconds=0.05, retry_cap_seconds=0.4, dispatch_interval=0.05,
    http_connect_timeout=1.0, http_read_timeout=3.0, lease_seconds=10.0, claim_seconds=5.0,
    pass_seconds=5.0, visibility_timeout=30, maintenance_cache_seconds=0,
    uncertain_window_seconds=1.0,
)


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    """Settings for a fast test fleet: short backoff and dispatch intervals."""
    return load_settings(redis_url=redis_url, key_prefix=prefix, **FAST)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """The PagerDuty simulator on a free port, without a rate limit unless a test sets one."""
    with Simulator(seed=1) as simulator:
        simulator.set_faults(rate_limit=None)
        yield simulator


@pytest.fixture
def routing_key() -> str:
    return random_routing_key()


@pytest.fixture
def destinations(sim: Simulator, routing_key: str) -> dict[str, Destination]:
    return parse_destinations(
        {"destinations": {"prod": {"routing_key": routing_key, "events_url": sim.events_url,
                                   "rate_limit_per_minute": 100_000}}},
        environ={},
    )


@pytest.fixture
def coalescing_destinations(sim: Simulator, routing_key: str) -> dict[str, Destination]:
    """`destinations` with coalescing on."""
    return parse_destinations(
        {"destinations": {"prod": {"routing_key": routing_key, "events_url": sim.events_url,
                                   "rate_limit_per_minute": 100_000, "coalesce": True}}},
        environ={},
    )


@pytest.fixture
def ctx(settings: Settings, destinations: dict[str, Destination]) -> Iterator[FleetContext]:
    """A worker's context on the test settings, for driving delivery passes directly."""
    context = FleetContext(settings, destinations)
    yield context
    context.close()


@dataclass
class Fleet:
    """A running test fleet: producer, Celery app, worker threads, simulator, Redis."""

    settings: Settings
    producer: AlertProducer
    sim: Simulator
    redis: redis.Redis

    @property
    def keys(self) -> Keyspace:
        return Keyspace(self.settings.key_prefix)

    def state(self, event_id: str) -> str | None:
        return self.redis.hget(self.keys.event(event_id), "state")

    def wait_final(self, event_ids: list[str], timeout: float = 60.0) -> dict[str, str]:
        """Wait until every event has left `pending`; return id -> final state."""
        def all_final() -> dict[str, str] | None:
            pipe = self.redis.pipeline(transaction=False)
            for event_id in event_ids:
                pipe.hget(self.keys.event(event_id), "state")
            states = dict(zip(event_ids, pipe.execute(), strict=True))
            return states if all(s not in (None, "pending") for s in states.values()) else None

        return wait_until(all_final, timeout, 0.1, f"{len(event_ids)} events to finish")


@pytest.fixture
def make_fleet(
    redis_url: str, prefix: str, destinations: dict[str, Destination], sim: Simulator,
    redis_conn: redis.Redis,
) -> Iterator[Callable[..., AbstractContextManager[Fleet]]]:
    """Start real Celery worker threads (threads pool) with settings overrides."""

    @contextmanager
    def start(**overrides: Any) -> Iterator[Fleet]:
        settings = load_settings(redis_url=redis_url, key_prefix=prefix, **{**FAST, **overrides})
        app = create_app(settings, destinations)
        app.conf.worker_hijack_root_logger = False
        producer = AlertProducer(settings, destinations=destinations, redis=redis_conn,
                                 celery_app=app)
        try:
            with start_worker(app, pool="threads", concurrency=8, perform_ping_check=False,
                              loglevel="INFO", shutdown_timeout=30):
                yield Fleet(settings, producer, sim, redis_conn)
        finally:
            app.fleet.close()

    yield start


@pytest.fixture
def fleet(make_fleet: Callable[..., AbstractContextManager[Fleet]]) -> Iterator[Fleet]:
    """A test fleet with the fast settings."""
    with make_fleet() as running:
        yield running
