"""Measure what a PagerDuty outage costs: requests sent while it lasts, time to recover.

Two worker processes with the default settings (circuit threshold, open interval, retry
backoff) deliver 100 incidents (trigger + resolve) to the simulator, which answers 503 for
`--outage` seconds and then recovers. Prints the requests that reached it during the
outage, the circuit's transitions, and how long after recovery everything was delivered.

    .venv/bin/python bench/outage.py --outage 120
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.workers import bench_fleet  # noqa: E402
from simulator import Faults, Simulator  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=120.0, help="seconds of 503s")
    parser.add_argument("--incidents", type=int, default=100)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()

    with Simulator(faults=Faults(rate_limit=None, force_status=503)) as sim, bench_fleet(
            "outage", args.redis_url, sim.events_url, env={}) as fleet:
        client, producer = fleet.client, fleet.producer
        events = []
        for n in range(args.incidents):
            base = {"monitor_id": str(n), "incident_id": f"o{n}"}
            events += [{**base, "action": "trigger", "summary": "[DOWN]"},
                       {**base, "action": "resolve"}]
        started = time.monotonic()
        ids = producer.send_many(events)
        while time.monotonic() - started < args.outage:
            time.sleep(1)
        during = len(sim.requests())
        sim.set_faults(force_status=None)
        recovered_at = time.monotonic()
        fleet.wait_delivered(ids, 900)
        drained = time.monotonic() - recovered_at
        log = [f["event"] + (f" {int(f['interval_ms']) // 1000}s" if "interval_ms" in f
                             else "")
               for _, f in client.xrange(f"{fleet.prefix}circuit-log")]
        print(f"outage of {args.outage:.0f} s, {args.incidents} incidents "
              f"({len(events)} events), 2 workers x 16 threads, default settings")
        print(f"requests that reached PagerDuty during the outage: {during}")
        print(f"circuit: {', '.join(log)}")
        print(f"everything delivered {drained:.1f} s after PagerDuty recovered; "
              f"{len(sim.requests()) - during} requests after recovery")
    return 0


if __name__ == "__main__":
    sys.exit(main())
