"""Worker processes for the benches that need a fleet: started as `monitao-pd worker` with
the environment given, each in its own session, and stopped (SIGTERM, then SIGKILL); and
`bench_fleet`, the whole set-up of the multi-process benches (`outage.py`, `uncertain.py`)."""

from __future__ import annotations

import os
import secrets
import signal
import string
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def worker_processes(env: dict[str, str], workdir: Path, name: str, count: int = 2,
                     concurrency: int = 16) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` workers named `{name}{n}@host`, logging to `workdir/w{n}.log`."""
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(1, count + 1):
            with (workdir / f"w{n}.log").open("wb") as log:
                workers.append(subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "worker", f"--concurrency={concurrency}",
                     f"--name={name}{n}@%h"], cwd=REPO, env=env, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True))
        yield workers
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)


@dataclass
class BenchFleet:
    """A running bench fleet: its Redis client, key prefix and a producer for `prod`."""

    client: redis.Redis
    prefix: str
    producer: Any  # producer.AlertProducer

    def wait_delivered(self, ids: list[str], limit: float) -> None:
        """Poll until every event of `ids` is delivered; SystemExit after `limit` s."""
        deadline = time.monotonic() + limit
        while True:
            pipe = self.client.pipeline(transaction=False)
            for event_id in ids:
                pipe.hget(f"{self.prefix}event:{event_id}", "state")
            if all(state == "delivered" for state in pipe.execute()):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"not everything was delivered within {limit:.0f} s")
            time.sleep(0.2)


@contextmanager
def bench_fleet(name: str, redis_url: str, events_url: str, *, env: dict[str, str],
                **settings: Any) -> Iterator[BenchFleet]:
    """Two `monitao-pd worker` processes on a key prefix of their own and one destination
    `prod` (a random routing key, no rate limit) at `events_url`, with `env` added to their
    environment and `settings` to the producer's; the workers stopped and the prefix's
    keys deleted afterwards."""
    from config.destinations import load_destinations
    from config.settings import load_settings
    from producer import AlertProducer
    from worker.app import create_app

    prefix = f"bench-{name}-{uuid.uuid4().hex[:8]}:"
    key = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
    workdir = Path(tempfile.mkdtemp(prefix=f"monitao-pd-{name}-"))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    config = workdir / "destinations.toml"
    config.write_text(f'[destinations.prod]\nrouting_key_env = "BENCH_PD_KEY"\n'
                      f'events_url = "{events_url}"\nrate_limit_per_minute = 100000\n')
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MONITAO_PD_")}
    environ.update(MONITAO_PD_REDIS_URL=redis_url, MONITAO_PD_KEY_PREFIX=prefix,
                   MONITAO_PD_CONFIG=str(config), BENCH_PD_KEY=key, **env)
    try:
        with worker_processes(environ, workdir, name):
            loaded = load_settings(redis_url=redis_url, key_prefix=prefix, config=config,
                                   **settings)
            destinations = load_destinations(config, environ=environ)
            producer = AlertProducer(loaded, destinations=destinations,
                                     celery_app=create_app(loaded, destinations))
            yield BenchFleet(client, prefix, producer)
    finally:  # the workers stopped before their keys are deleted
        for found in client.scan_iter(f"{prefix}*"):
            client.delete(found)
