"""Measure what ordering around lost answers costs, and whom it costs.

Two worker processes deliver `--incidents` incidents to the simulator, which holds a
fraction of requests (`--stall-rate`) past the workers' read timeout, processes them and
never answers: a request PagerDuty took whose answer was lost. Each incident's trigger is
sent, then its resolve once the trigger is delivered (the worst case: the resolve meets the
whole uncertainty window). Prints, for incidents with an ambiguous attempt and for the
others: requests per incident and the resolve's latency (enqueue to delivered, median and
worst), and checks that every incident ended resolved at the simulator.

    .venv/bin/python bench/uncertain.py --incidents 200 --window 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.workers import bench_fleet  # noqa: E402
from simulator import Faults, Simulator  # noqa: E402
from worker import timeline  # noqa: E402

READ_TIMEOUT = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--stall-rate", type=float, default=0.1)
    parser.add_argument("--window", type=float, default=30.0,
                        help="MONITAO_PD_UNCERTAIN_WINDOW_SECONDS")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()

    faults = Faults(rate_limit=None, stall_rate=args.stall_rate,
                    stall_ms=(READ_TIMEOUT + 1.0) * 1000)
    with Simulator(faults=faults) as sim, bench_fleet(
            "uncertain", args.redis_url, sim.events_url,
            env={"MONITAO_PD_HTTP_READ_TIMEOUT": str(READ_TIMEOUT),
                 "MONITAO_PD_UNCERTAIN_WINDOW_SECONDS": str(args.window)},
            http_read_timeout=READ_TIMEOUT, uncertain_window_seconds=args.window) as fleet:
        client, producer = fleet.client, fleet.producer
        incidents = [f"u{n}" for n in range(args.incidents)]
        triggers = producer.send_many([
            {"monitor_id": "1", "incident_id": i, "action": "trigger", "summary": "[DOWN]"}
            for i in incidents])
        fleet.wait_delivered(triggers, 300)
        resolves = producer.send_many([
            {"monitor_id": "1", "incident_id": i, "action": "resolve"} for i in incidents])
        fleet.wait_delivered(resolves, 300 + 2 * args.window)
        # confirmations go a window after their resolve
        time.sleep(args.window + 3)

        requests: dict[str, int] = {}
        for request in sim.requests():
            requests[request["dedup_key"]] = requests.get(request["dedup_key"], 0) + 1
        keys = producer.keys
        rows: dict[bool, list[tuple[int, float]]] = {True: [], False: []}
        for incident, resolve in zip(incidents, resolves, strict=True):
            entries = list(timeline.read(client, keys, incident))
            ambiguous = any(e.get("answer_lost") for e in entries)
            enqueued = next(e for e in entries
                            if e["stage"] == "enqueued" and e["event_id"] == resolve)
            delivered = next(e for e in entries
                             if e["stage"] == "delivered" and e["event_id"] == resolve)
            latency = (timeline.entry_millis(delivered["id"])
                       - timeline.entry_millis(enqueued["id"])) / 1000
            rows[ambiguous].append(
                (requests[f"monitao-monitor-1-incident-{incident}"], latency))
        latest: dict[str, str] = {}
        for state in sim.incidents():
            latest[state["dedup_key"]] = state["status"]
        unresolved = sum(status != "resolved" for status in latest.values())

        print(f"{args.incidents} incidents, {args.stall_rate:.0%} of requests held "
              f"{READ_TIMEOUT + 1:.0f} s and never answered (read timeout "
              f"{READ_TIMEOUT:.0f} s), uncertainty window {args.window:g} s, "
              "2 workers x 16 threads")
        print("| incidents | count | requests per incident | resolve latency median | "
              "worst |")
        print("| --- | --- | --- | --- | --- |")
        for ambiguous, label in ((True, "with a lost answer"), (False, "without")):
            data = rows[ambiguous]
            if not data:
                print(f"| {label} | 0 | - | - | - |")
                continue
            print(f"| {label} | {len(data)} | "
                  f"{statistics.mean(r for r, _ in data):.2f} | "
                  f"{statistics.median(lat for _, lat in data):.2f} s | "
                  f"{max(lat for _, lat in data):.2f} s |")
        print(f"incidents left open at the simulator: {unresolved}; PagerDuty incidents "
              f"opened: {len(sim.incidents())} for {args.incidents} outages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
