"""Benchmark of maintenance windows synchronised to PagerDuty: `python -m bench.maintenance_sync`.

Against the local Redis (database 9, a key prefix of this run's own, deleted afterwards) and
the simulator's REST API over HTTPS (in this process), with `--destinations` run-time
destinations that each have REST credentials and a service of their own, and `--windows`
run-time windows spread over them:

- the first pass, which creates every window at PagerDuty (a list of the service's open
  windows, then a `POST`, per window): its time and windows per second;
- a pass with nothing to do (every window synced): the reconciler's steady cost, paid every
  `MONITAO_PD_MAINTENANCE_SYNC_SECONDS` by one worker of the fleet (median of `--repeats`);
- a pass after one window changed (one `PUT`): how soon a change reaches PagerDuty once the
  pass starts.

It measures, never asserts.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import redis

from config.keyspace import Keyspace
from config.lookup import DestinationLookup
from config.maintenance import MaintenanceWindow
from config.registry import Registry
from config.secrets import generate_key, parse_key_ring
from simulator import DEMO_API_TOKEN, Simulator
from worker.maintenance import add_window
from worker.maintenance_sync import MaintenanceSync

REDIS_URL = "redis://127.0.0.1:6379/9"


def _routing_key() -> str:
    return secrets.token_hex(16)


def run(destinations: int, windows: int, repeats: int) -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = Keyspace(f"bench-msync-{secrets.token_hex(4)}:")
    ring = parse_key_ring(generate_key())
    try:
        with Simulator(seed=1) as sim:
            sim.set_faults(rate_limit=None)
            registry = Registry(client, keys, key_ring=ring)
            for i in range(destinations):
                service = f"PSVC{i:05d}"
                sim.add_service(service)
                registry.add(f"d{i}", {"events_url": sim.events_url,
                                       "pagerduty_service_id": service,
                                       "pagerduty_api_url": sim.rest_url},
                             _routing_key(), api_token=DEMO_API_TOKEN)
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
            for i in range(windows):
                add_window(client, keys, MaintenanceWindow(
                    id=f"w{i}", destination=f"d{i % destinations}",
                    start=start + timedelta(minutes=i), end=start + timedelta(minutes=i + 60),
                    reason="bench"))
            lookup = DestinationLookup(client, keys, key_ring=ring)
            sync = MaintenanceSync(client, keys, lookup, key_ring=ring, ca_file=sim.ca_file,
                                   timeout=10, attempts=1)
            began = time.perf_counter()
            first = sync.run_once()
            took = time.perf_counter() - began
            print(f"first pass: {windows} windows over {destinations} destinations in "
                  f"{took:.1f} s ({windows / took:.0f} windows/s); {dict(first or {})}")
            steady = []
            for _ in range(repeats):
                began = time.perf_counter()
                done = sync.run_once()
                steady.append(time.perf_counter() - began)
            print(f"pass with nothing to do: median {statistics.median(steady) * 1000:.0f} ms "
                  f"(of {repeats}); {dict(done or {})}")
            add_window(client, keys, MaintenanceWindow(
                id="w0", destination="d0", start=start, end=start + timedelta(hours=2),
                reason="bench, moved"))
            began = time.perf_counter()
            done = sync.run_once()
            print(f"pass after one window changed: {(time.perf_counter() - began) * 1000:.0f} ms;"
                  f" {dict(done or {})}")
            print(f"windows at the simulated PagerDuty: {len(sim.maintenance_windows())}")
    finally:
        for key in client.scan_iter(match=f"{keys.prefix}*", count=1000):
            client.delete(key)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.maintenance_sync",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--destinations", type=int, default=100)
    parser.add_argument("--windows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    run(args.destinations, args.windows, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
