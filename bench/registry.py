"""Benchmark of run-time destinations at scale: `python -m bench --registry`.

Against the local Redis (database 9, key prefixes of this run's own, deleted afterwards), the
simulator in its own process (`--rate-limit 0`) and a real worker process (threads pool):

- registration: `Registry.add` one destination at a time (validation, sealing the routing
  key, one script: what `destinations add` and the HTTP API do per destination), up to
  `--destinations` (default 100,000);
- delivery: the fleet's rate from `send_many` to the simulator's receipt of the last event,
  with the registry holding 10 destinations, then the 100,000 (every event to a destination
  not delivered to before in the run, so each is a cache miss in the worker and the
  producer), alternated and repeated, at 0 ms and 150 ms of PagerDuty latency; the worker's
  memory (VmRSS) at rest and at its peak in each case. Target: the rate with 100,000 at
  least 0.9 of the rate with 10.

It measures, never asserts: timing depends on the machine and on what else runs on it.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.run import BATCH, Processes, SimulatorControl, group_cpu_seconds, rss_mib

CONCURRENCY = 64


@dataclass
class Case:
    destinations: int
    latency_ms: float
    rates: list[float] = field(default_factory=list)
    # CPU ms per event: the worker, the producer (this process), Redis, the simulator
    cpu: list[tuple[float, float, float, float]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")

    def cpu_median(self, index: int) -> float:
        return statistics.median(c[index] for c in self.cpu) if self.cpu else float("nan")


class RegistryBench:
    def __init__(self, redis_url: str, destinations: int, events: int, repeats: int) -> None:
        from config.secrets import generate_key

        self.redis_url, self.count, self.events, self.repeats = (redis_url, destinations,
                                                                 events, repeats)
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"bench-registry-{self.run_id}:"
        self.ring = generate_key()
        self.workdir = Path(tempfile.mkdtemp(prefix="monitao-pd-bench-registry-"))
        self.processes = Processes(self.workdir)
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.used = {"few": 0, "many": 0}
        self.memory: dict[str, tuple[float, float]] = {}
        self.cases: list[Case] = []
        self.registration: tuple[int, float] = (0, 0.0)
        self.cached: dict[str, int] = {}

    def env(self, which: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITAO_PD_")}
        env.update(MONITAO_PD_REDIS_URL=self.redis_url,
                   MONITAO_PD_KEY_PREFIX=f"{self.prefix}{which}:",
                   MONITAO_PD_SECRET_KEYS=self.ring, PYTHONUNBUFFERED="1")
        return env

    def settings(self, which: str) -> Any:
        from config.settings import load_settings

        return load_settings(redis_url=self.redis_url, key_prefix=f"{self.prefix}{which}:",
                             secret_keys=self.ring)

    def start_simulator(self) -> None:
        from config.embedded_redis import free_port

        port = free_port()
        self.events_url = f"http://127.0.0.1:{port}/v2/enqueue"
        self.sim_process = self.processes.start(
            "simulator", [sys.executable, "-m", "cli.main", "simulator", "--port", str(port),
                          "--rate-limit", "0"], self.env("sim"), ready=None)
        self.sim = SimulatorControl(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sim.call("GET", "/_sim/health")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def register(self, which: str, count: int, measure: bool) -> None:
        from config.connections import redis_client
        from config.keyspace import Keyspace
        from config.registry import Registry

        settings = self.settings(which)
        registry = Registry(redis_client(settings), Keyspace(settings.key_prefix),
                            key_ring=settings.key_ring())
        started = time.perf_counter()
        for n in range(count):
            registry.add(f"d{n:06d}", {"events_url": self.events_url,
                                       "rate_limit_per_minute": 100_000,
                                       "account": f"a{n % 1000}"},
                         uuid.uuid4().hex)
            if measure and n and n % 20_000 == 0:
                print(f"  registered {n} ({n / (time.perf_counter() - started):.0f}/s)",
                      flush=True)
        if measure:
            self.registration = (count, time.perf_counter() - started)

    def start_worker(self, which: str) -> Any:
        return self.processes.start(
            f"worker-{which}", [sys.executable, "-m", "cli.main", "worker", "--pool=threads",
                                f"--concurrency={CONCURRENCY}", f"--name={which}@%h"],
            self.env(which))

    def deliver(self, which: str, size: int, latency_ms: float, worker: Any,
                producer: Any, peak: list[float]) -> float:
        from config.keyspace import Keyspace

        self.sim.reset(latency_ms)
        events = []
        for _ in range(self.events):
            n = self.used[which]
            self.used[which] += 1
            events.append({"destination": f"d{n % size:06d}", "action": "trigger",
                           "monitor_id": n, "incident_id": f"{which}{n}",
                           "summary": f"[DOWN] host-{n}", "level": "critical"})
        schedule = Keyspace(f"{self.prefix}{which}:").schedule
        before = self.cpu(worker)
        started = time.time()
        for first in range(0, len(events), BATCH):
            producer.send_many(events[first:first + BATCH])
        deadline = time.monotonic() + 600
        while self.redis.zcard(schedule):
            peak[0] = max(peak[0], rss_mib(worker.pid))
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"the {which} worker did not drain")
            time.sleep(0.02)
        after = self.cpu(worker)
        receipts = self.sim.receipts()
        if len(receipts) < len(events):
            raise RuntimeError(f"{len(receipts)} of {len(events)} received")
        self.last_cpu = tuple(1000 * (b - a) / len(events)
                              for a, b in zip(before, after, strict=True))
        return len(events) / (max(r["ts"] for r in receipts) - started)

    def cpu(self, worker: Any) -> tuple[float, float, float, float]:
        """CPU seconds so far: the worker's process group, this process (the producer),
        the Redis server (all its clients), the simulator."""
        info = self.redis.info("cpu")
        return (group_cpu_seconds(worker.pid), time.process_time(),
                float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
                group_cpu_seconds(self.sim_process.pid))

    def run(self) -> None:
        from producer import AlertProducer

        self.start_simulator()
        print(f"registering {self.count} destinations...", flush=True)
        self.register("many", self.count, measure=True)
        self.register("few", 10, measure=False)
        workers, producers, peaks = {}, {}, {}
        for which in ("few", "many"):
            workers[which] = self.start_worker(which)
            time.sleep(1.0)
            producers[which] = AlertProducer(self.settings(which))
            peaks[which] = [rss_mib(workers[which].pid)]
            self.memory[which] = (peaks[which][0], 0.0)
        cases = {(which, latency): Case(10 if which == "few" else self.count, latency)
                 for latency in (0.0, 150.0) for which in ("few", "many")}
        for repeat in range(self.repeats):
            for (which, latency), case in cases.items():
                size = 10 if which == "few" else self.count
                rate = self.deliver(which, size, latency, workers[which], producers[which],
                                    peaks[which])
                case.rates.append(rate)
                case.cpu.append(self.last_cpu)
                print(f"  run {repeat + 1}: {size} destinations, {latency:.0f} ms: "
                      f"{rate:.0f} events/s", flush=True)
        for which in ("few", "many"):
            self.memory[which] = (self.memory[which][0], peaks[which][0])
            producers[which].close()
            self.processes.stop(workers[which])
        self.cases = list(cases.values())

    def report(self, elapsed: float) -> str:
        count, seconds = self.registration
        out = [f"registration: {count} destinations in {seconds:.1f} s "
               f"({count / seconds:.0f}/s, Registry.add one at a time)", ""]
        out.append(f"{'destinations':>12} {'latency':>8} {'events/s':>9}  "
                   f"{'CPU ms/event: worker, producer, Redis, sim.':>44}  runs")
        for case in self.cases:
            cpu = ", ".join(f"{case.cpu_median(i):.2f}" for i in range(4))
            out.append(f"{case.destinations:>12} {case.latency_ms:>6.0f} ms {case.rate:>9.0f}  "
                       f"{cpu:>44}  " + " ".join(f"{r:.0f}" for r in case.rates))
        out.append("")
        for latency in (0.0, 150.0):
            few = next(c for c in self.cases if c.destinations == 10
                       and c.latency_ms == latency)
            many = next(c for c in self.cases if c.destinations != 10
                        and c.latency_ms == latency)
            out.append(f"rate with {many.destinations} / rate with 10 at {latency:.0f} ms: "
                       f"{many.rate / few.rate:.2f}  [>= 0.9]")
        out.append("")
        out.append(f"{'worker memory (VmRSS)':<34} {'at rest':>8} {'peak':>8}")
        for which, (rest, peak) in self.memory.items():
            size = 10 if which == "few" else self.count
            out.append(f"{f'{size} destinations':<34} {rest:>5.0f} MiB {peak:>5.0f} MiB")
        out.append(f"\nevents per run: {self.events}, threads x{CONCURRENCY}, "
                   f"{self.repeats} repeats (medians); took {elapsed:.0f} s")
        return "\n".join(out)

    def close(self) -> None:
        self.processes.close()
        for key in self.redis.scan_iter(match=f"{self.prefix}*", count=5000):
            self.redis.delete(key)


def main(redis_url: str, destinations: int, events: int, repeats: int) -> int:
    began = time.monotonic()
    bench = RegistryBench(redis_url, destinations, events, repeats)
    try:
        bench.run()
        print(bench.report(time.monotonic() - began))
        print(f"(logs in {bench.workdir})")
        return 0
    finally:
        bench.close()
