"""Fixtures for fault tests: worker processes against a destinations file and the simulator."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config.destinations import Destination, load_destinations
from config.settings import Settings, load_settings
from producer import AlertProducer
from simulator import Simulator
from tests.conftest import FAST, Fleet
from tests.faults.processes import WorkerProcess, settings_env
from worker.app import create_app


@pytest.fixture
def fleet_env(tmp_path: Path, redis_url: str, prefix: str, sim: Simulator,
              routing_key: str) -> Callable[..., dict[str, str]]:
    """Build the environment of worker processes: settings, destinations file, routing key."""

    def build(rate_limit: int = 100_000, **overrides: object) -> dict[str, str]:
        config = tmp_path / "destinations.toml"
        config.write_text(
            f'[destinations.prod]\nrouting_key_env = "PD_KEY_TEST"\n'
            f'events_url = "{sim.events_url}"\nrate_limit_per_minute = {rate_limit}\n',
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITAO_PD_")}
        env.update(settings_env(**{"redis_url": redis_url, "key_prefix": prefix,
                                   "config": config, **FAST, **overrides}))
        env["PD_KEY_TEST"] = routing_key
        return env

    return build


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes; every one still running is stopped at the end."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], name: str = "w1", concurrency: int = 8) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path, name, concurrency)
        started.append(worker)  # before start(): one that never gets ready is killed too
        return worker.start()

    yield start
    for worker in started:
        worker.kill()
        if worker.process is not None:
            worker.process.wait(timeout=10)


def fleet_for(env: dict[str, str], sim: Simulator, redis_conn) -> Fleet:
    """A producer and helpers for the fleet the worker processes form (no worker here)."""
    names = {k.removeprefix("MONITAO_PD_").lower(): v for k, v in env.items()
             if k.startswith("MONITAO_PD_")}
    settings: Settings = load_settings(**names)
    destinations: dict[str, Destination] = load_destinations(settings.config, environ=env)
    producer = AlertProducer(settings, destinations=destinations, redis=redis_conn,
                             celery_app=create_app(settings, destinations))
    return Fleet(settings, producer, sim, redis_conn)
