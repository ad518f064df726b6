"""Measure what a PagerDuty outage costs: requests sent while it lasts, time to recover.

Two worker processes with the default settings (circuit threshold, open interval, retry
backoff) deliver 100 incidents (trigger + resolve) to the simulator, which answers 503 for
`--outage` seconds and then recovers. Prints the requests that reached it during the
outage, the circuit's transitions, and how long after recovery everything was delivered.

    .venv/bin/python bench/outage.py --outage 120
"""

from __future__ import annotations

import argparse
import os
import secrets
import string
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.workers import worker_processes  # noqa: E402
from config.destinations import load_destinations  # noqa: E402
from config.settings import load_settings  # noqa: E402
from producer import AlertProducer  # noqa: E402
from simulator import Faults, Simulator  # noqa: E402
from worker.app import create_app  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=120.0, help="seconds of 503s")
    parser.add_argument("--incidents", type=int, default=100)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()

    prefix = f"bench-outage-{uuid.uuid4().hex[:8]}:"
    key = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
    workdir = Path(tempfile.mkdtemp(prefix="monitao-pd-outage-"))
    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    stack = ExitStack()
    with Simulator(faults=Faults(rate_limit=None, force_status=503)) as sim:
        config = workdir / "destinations.toml"
        config.write_text(f'[destinations.prod]\nrouting_key_env = "BENCH_PD_KEY"\n'
                          f'events_url = "{sim.events_url}"\nrate_limit_per_minute = 100000\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITAO_PD_")}
        env.update(MONITAO_PD_REDIS_URL=args.redis_url, MONITAO_PD_KEY_PREFIX=prefix,
                   MONITAO_PD_CONFIG=str(config), BENCH_PD_KEY=key)
        try:
            stack.enter_context(worker_processes(env, workdir, "outage"))
            settings = load_settings(redis_url=args.redis_url, key_prefix=prefix, config=config)
            destinations = load_destinations(config, environ=env)
            producer = AlertProducer(settings, destinations=destinations,
                                     celery_app=create_app(settings, destinations))
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
            while True:
                pipe = client.pipeline(transaction=False)
                for event_id in ids:
                    pipe.hget(f"{prefix}event:{event_id}", "state")
                if all(s == "delivered" for s in pipe.execute()):
                    break
                if time.monotonic() - recovered_at > 900:
                    print("not everything was delivered within 15 minutes")
                    return 1
                time.sleep(0.5)
            drained = time.monotonic() - recovered_at
            log = [f["event"] + (f" {int(f['interval_ms']) // 1000}s" if "interval_ms" in f
                                 else "")
                   for _, f in client.xrange(f"{prefix}circuit-log")]
            print(f"outage of {args.outage:.0f} s, {args.incidents} incidents "
                  f"({len(events)} events), 2 workers x 16 threads, default settings")
            print(f"requests that reached PagerDuty during the outage: {during}")
            print(f"circuit: {', '.join(log)}")
            print(f"everything delivered {drained:.1f} s after PagerDuty recovered; "
                  f"{len(sim.requests()) - during} requests after recovery")
        finally:
            stack.close()  # the workers stop before their keys are deleted
            for name in client.scan_iter(f"{prefix}*"):
                client.delete(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
