"""Benchmark of the fleet against real Redis, real worker processes and the simulator.

    .venv/bin/python -m bench            # quick (`make bench`), about 5 minutes on 2 cores
    .venv/bin/python -m bench --full     # more events and repeats, and a pool sweep
    .venv/bin/python -m bench --pools gevent:64   # after `pip install gevent`
    .venv/bin/python -m bench --scale    # hot-path Redis steps at 100,000 (bench/scale.py)
    .venv/bin/python -m bench --registry   # 100,000 run-time destinations (bench/registry.py)

Everything runs on this machine: the local Redis (database 9, a key prefix of its own per
run, deleted afterwards), the PagerDuty simulator in its own process (`monitao-pd
simulator --rate-limit 0`, its latency switched between 0 and 150 ms through
`/_sim/faults`), and each worker as its own process group. Four destinations with their
own routing keys and a budget far above the load, one incident per event, so neither
PagerDuty's per-key limit nor the fleet's rate window is the cap.

Cases (each repeated; the table shows medians):
- producer: `send()` one by one, and `send_many()` in batches of 500 (no worker running);
- intake: the HTTP API one by one and in batches of 500 (8 clients), the intake stream,
  and the API's latency (bench/intake.py);
- no-op: raw Celery tasks that do nothing (bench/baselines.py), from publishing the batch
  to the last one acknowledged;
- naive: one Celery task per event posting it with httpx and Celery's autoretry;
- fleet: `send_many` to the simulator's receipt of the last event, at 0 and 150 ms;
- latency: enqueue-to-receipt p50/p95/p99 of the fleet at half its measured capacity.
CPU is the workers' process groups' user + system time from /proc, per delivered event,
beside that of the Redis server (INFO cpu, all of its clients) and of the simulator, since
all of them share the machine's cores; memory is the worker process's VmRSS at rest and
its peak while loaded.
It measures, never asserts: timing depends on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/9"
DESTINATIONS = 4
BATCH = 500
CLK = os.sysconf("SC_CLK_TCK")


@dataclass
class Options:
    events: int
    repeats: int
    single: int
    configs: list[tuple[str, int]]
    latency_seconds: float
    redis_url: str
    ack_waker: float | None = None


@dataclass
class Row:
    case: str
    setting: str
    rates: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    redis_ms: list[float] = field(default_factory=list)  # the Redis server's CPU per event
    sim_ms: list[float] = field(default_factory=list)  # the simulator's CPU per event
    note: str = ""

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_ms) if self.cpu_ms else float("nan")

    def record_cpu(self, before: tuple[float, float, float], after: tuple[float, float, float],
                   events: int) -> None:
        """Worker, Redis and simulator CPU per event between two `Bench.cpu` readings."""
        worker, server, sim = (1000 * (b - a) / events for a, b in zip(before, after,
                                                                      strict=True))
        self.cpu_ms.append(worker)
        self.redis_ms.append(server)
        self.sim_ms.append(sim)


# --------------------------------------------------------------------------- processes

def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in a process group, plus reaped children."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:  # pgrp
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / CLK


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Processes:
    """Process groups started by the benchmark, stopped in `close`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str],
              ready: str | None = " ready.") -> subprocess.Popen[bytes]:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(process)
        deadline = time.monotonic() + 60
        while ready and ready not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n"
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def close(self) -> None:
        for process in self.started:
            self.stop(process)


# --------------------------------------------------------------------------- simulator

class SimulatorControl:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def reset(self, latency_ms: float) -> None:
        self.call("POST", "/_sim/reset", {})
        self.call("POST", "/_sim/faults", {"latency_ms": latency_ms, "rate_limit": None})

    def receipts(self) -> list[dict[str, Any]]:
        return [r for r in self.call("GET", "/_sim/requests") if r["status"] == 202]


# --------------------------------------------------------------------------- the bench

class Bench:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"bench-{self.run_id}:"
        self.workdir = Path(tempfile.mkdtemp(prefix="monitao-pd-bench-"))
        self.processes = Processes(self.workdir)
        self.redis = redis.Redis.from_url(options.redis_url, decode_responses=True)
        self.keys = {f"d{n}": uuid.uuid4().hex for n in range(DESTINATIONS)}
        self.rows: list[Row] = []
        self.memory: list[tuple[str, float, float]] = []
        self.latency: dict[str, float] = {}
        self.api_latency: dict[str, Any] = {}
        self.counter = 0

    # ---- set-up

    def start_simulator(self) -> None:
        from config.embedded_redis import free_port

        port = free_port()
        self.sim_url = f"http://127.0.0.1:{port}"
        self.events_url = self.sim_url + "/v2/enqueue"
        self.sim_process = self.processes.start(
            "simulator",
            [sys.executable, "-m", "cli.main", "simulator", "--port", str(port),
             "--latency-ms", "0", "--rate-limit", "0"],
            self.env("sim:"), ready=None)
        self.sim = SimulatorControl(self.sim_url)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sim.call("GET", "/_sim/health")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def env(self, case_prefix: str) -> dict[str, str]:
        config = self.workdir / "destinations.toml"
        if not config.exists():
            config.write_text("".join(
                f'[destinations.{name}]\nrouting_key_env = "BENCH_PD_KEY_{name.upper()}"\n'
                f'events_url = "{getattr(self, "events_url", "http://127.0.0.1:9/v2/enqueue")}"\n'
                "rate_limit_per_minute = 100000\n\n"
                for name in self.keys))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITAO_PD_")}
        env.update(
            MONITAO_PD_REDIS_URL=self.options.redis_url,
            MONITAO_PD_KEY_PREFIX=self.prefix + case_prefix,
            MONITAO_PD_CONFIG=str(config),
            BENCH_BROKER_URL=self.options.redis_url,
            BENCH_PREFIX=self.prefix + case_prefix,
            PYTHONUNBUFFERED="1",
        )
        env.update({f"BENCH_PD_KEY_{name.upper()}": key for name, key in self.keys.items()})
        return env

    def producer(self, case_prefix: str) -> Any:
        from config.settings import load_settings
        from producer import AlertProducer

        saved = dict(os.environ)
        os.environ.update(self.env(case_prefix))
        try:
            return AlertProducer(load_settings())
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def events(self, count: int) -> list[dict[str, Any]]:
        batch = []
        for _ in range(count):
            self.counter += 1
            n = self.counter
            batch.append({
                "destination": f"d{n % DESTINATIONS}", "action": "trigger", "monitor_id": n,
                "incident_id": f"r{self.run_id}-{n}", "summary": f"[DOWN] host-{n} - HTTP 503",
                "level": "critical", "monitor_name": f"host-{n}", "url": f"https://h{n}.example",
                "status_code": 503, "response_time_ms": 1234, "check_location": "eu-west",
            })
        return batch

    # ---- cases

    def producer_case(self) -> None:
        producer = self.producer("producer:")
        single, many = Row("producer send()", "one by one"), Row(
            "producer send_many()", f"batches of {BATCH}")
        for _ in range(self.options.repeats):
            events = self.events(self.options.single)
            started = time.perf_counter()
            for event in events:
                producer.send(event)
            single.rates.append(len(events) / (time.perf_counter() - started))
            events = self.events(self.options.events)
            started = time.perf_counter()
            for first in range(0, len(events), BATCH):
                producer.send_many(events[first:first + BATCH])
            many.rates.append(len(events) / (time.perf_counter() - started))
        producer.close()
        self.rows += [single, many]

    def start_worker(self, kind: str, pool: str, concurrency: int,
                     case_prefix: str) -> subprocess.Popen[bytes]:
        env = self.env(case_prefix)
        if kind == "fleet":
            module = "cli.main"
            if self.options.ack_waker is not None or pool == "gevent":
                module = "bench.fleet_worker"
            if self.options.ack_waker is not None:
                env["BENCH_ACK_WAKER_SECONDS"] = str(self.options.ack_waker)
            argv = [sys.executable, "-m", module, "worker", f"--pool={pool}",
                    f"--concurrency={concurrency}", f"--name={case_prefix}@%h"]
        else:
            argv = [sys.executable, "-m", "celery", "-A", "bench.baselines", "worker",
                    f"--pool={pool}", f"--concurrency={concurrency}", "-Q", "bench",
                    "--loglevel=INFO", "--without-mingle", "--without-gossip",
                    f"--hostname={case_prefix}@%h"]
        process = self.processes.start(case_prefix.strip(":"), argv, env)
        time.sleep(1.0)
        return process

    def cpu(self, worker: subprocess.Popen[bytes]) -> tuple[float, float, float]:
        """CPU seconds so far of the worker's process group, the Redis server (all of its
        clients: the bench, the worker, the producer) and the simulator."""
        info = self.redis.info("cpu")
        return (group_cpu_seconds(worker.pid),
                float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
                group_cpu_seconds(self.sim_process.pid))

    def run_until(self, done: Callable[[], bool], worker: subprocess.Popen[bytes],
                  peak: list[float], timeout: float = 300) -> float:
        deadline = time.monotonic() + timeout
        while not done():
            peak[0] = max(peak[0], rss_mib(worker.pid))
            if worker.poll() is not None:
                raise RuntimeError("worker exited")
            if time.monotonic() > deadline:
                raise RuntimeError("timed out")
            time.sleep(0.02)
        return time.time()

    def baseline_case(self, pool: str, concurrency: int) -> None:
        from bench.baselines import create_app

        setting = f"{pool} x{concurrency}"
        case_prefix = f"base-{pool}{concurrency}:"
        worker = self.start_worker("baseline", pool, concurrency, case_prefix)
        at_rest = rss_mib(worker.pid)
        peak = [at_rest]
        app = create_app(self.options.redis_url, self.prefix + case_prefix)
        queue, unacked = self.prefix + case_prefix + "bench", self.prefix + case_prefix + "unacked"

        def drained() -> bool:
            pipe = self.redis.pipeline(transaction=False)
            pipe.llen(queue)
            pipe.hlen(unacked)
            return not any(pipe.execute())

        noop = Row("no-op Celery task", setting)
        naive = {latency: Row("naive httpx task", f"{setting}, {latency:.0f} ms")
                 for latency in (0.0, 150.0)}
        for _ in range(self.options.repeats):
            cpu = self.cpu(worker)
            started = time.time()
            with app.producer_or_acquire() as producer:
                for n in range(self.options.events):
                    app.send_task("bench.noop", args=(n,), producer=producer)
            ended = self.run_until(drained, worker, peak)
            noop.rates.append(self.options.events / (ended - started))
            noop.record_cpu(cpu, self.cpu(worker), self.options.events)
            for latency, row in naive.items():
                self.sim.reset(latency)
                events = self.events(self.options.events)
                bodies = [self.naive_body(e) for e in events]
                cpu = self.cpu(worker)
                started = time.time()
                with app.producer_or_acquire() as producer:
                    for body in bodies:
                        app.send_task("bench.naive_deliver", args=(self.events_url, body),
                                      producer=producer)
                self.run_until(drained, worker, peak)
                receipts = self.sim.receipts()
                row.rates.append(len(bodies) / (max(r["ts"] for r in receipts) - started))
                row.record_cpu(cpu, self.cpu(worker), len(bodies))
        self.processes.stop(worker)
        self.rows += [noop, *naive.values()]
        self.memory.append((f"baseline worker, {setting}", at_rest, peak[0]))

    def naive_body(self, event: dict[str, Any]) -> dict[str, Any]:
        from producer.event import parse_event

        parsed = parse_event(event)
        return {
            "routing_key": self.keys[event["destination"]], "event_action": "trigger",
            "dedup_key": parsed.dedup_key,
            "payload": {"summary": parsed.summary, "source": "MoniTao", "severity": "critical",
                        "timestamp": parsed.occurred_at.isoformat(),
                        "custom_details": {"monitor_id": parsed.monitor_id,
                                           "incident_id": parsed.incident_id}},
        }

    def fleet_case(self, pool: str, concurrency: int, with_latency: bool) -> None:
        from config.keyspace import Keyspace

        setting = f"{pool} x{concurrency}"
        case_prefix = f"fleet-{pool}{concurrency}:"
        worker = self.start_worker("fleet", pool, concurrency, case_prefix)
        at_rest = rss_mib(worker.pid)
        peak = [at_rest]
        producer = self.producer(case_prefix)
        schedule = Keyspace(self.prefix + case_prefix).schedule

        def drained() -> bool:
            return self.redis.zcard(schedule) == 0

        rows = {latency: Row("fleet (send_many -> receipt)", f"{setting}, {latency:.0f} ms")
                for latency in (0.0, 150.0)}
        for _ in range(self.options.repeats):
            for latency, row in rows.items():
                self.sim.reset(latency)
                events = self.events(self.options.events)
                cpu = self.cpu(worker)
                started = time.time()
                for first in range(0, len(events), BATCH):
                    producer.send_many(events[first:first + BATCH])
                self.run_until(drained, worker, peak)
                receipts = self.sim.receipts()
                if len(receipts) < len(events):
                    raise RuntimeError(f"{len(receipts)} of {len(events)} received")
                row.rates.append(len(events) / (max(r["ts"] for r in receipts) - started))
                row.record_cpu(cpu, self.cpu(worker), len(events))
        self.rows += rows.values()
        if with_latency:
            self.latency_case(producer, rows[150.0].rate / 2, drained, worker, peak, setting)
        producer.close()
        self.processes.stop(worker)
        self.memory.append((f"fleet worker, {setting}", at_rest, peak[0]))

    def latency_case(self, producer: Any, rate: float, drained: Callable[[], bool],
                     worker: subprocess.Popen[bytes], peak: list[float], setting: str) -> None:
        from producer.event import parse_event

        self.sim.reset(150.0)
        tick = 0.05
        per_tick = max(1, round(rate * tick))
        ticks = max(1, round(self.options.latency_seconds / tick))
        sent: dict[str, float] = {}
        started = time.monotonic()
        for n in range(ticks):
            time.sleep(max(0.0, started + n * tick - time.monotonic()))
            events = self.events(per_tick)
            at = time.time()
            producer.send_many(events)
            for event in events:
                sent[parse_event(event).dedup_key] = at
        self.run_until(drained, worker, peak)
        waits = sorted(1000 * (r["ts"] - sent[r["dedup_key"]]) for r in self.sim.receipts())
        cut = statistics.quantiles(waits, n=100, method="inclusive")
        self.latency = {"setting": setting, "rate": per_tick / tick, "events": len(waits),
                        "p50": cut[49], "p95": cut[94], "p99": cut[98], "max": waits[-1]}

    # ---- report

    def report(self, elapsed: float) -> str:
        out = []
        out.append(f"machine: {platform.node()}, {os.cpu_count()} cores, "
                   f"{platform.processor() or platform.machine()}, Python "
                   f"{platform.python_version()}, {platform.platform()}")
        info = self.redis.info("server")
        import celery
        import httpx
        import kombu
        out.append(f"redis {info['redis_version']} at {self.options.redis_url}; celery "
                   f"{celery.__version__}, kombu {kombu.__version__}, httpx {httpx.__version__}")
        o = self.options
        out.append(f"settings: {o.events} events per throughput run, {o.single} for send(), "
                   f"{o.repeats} repeats (medians shown), {DESTINATIONS} destinations, one "
                   "incident per event, simulator --rate-limit 0, workers at log level INFO"
                   + (f", fleet ack waker {o.ack_waker} s" if o.ack_waker is not None else ""))
        out.append("")
        out.append(f"{'case':<30} {'pool x concurrency, latency':<28} {'events/s':>9} "
                   f"{'worker CPU ms/event':>20} {'Redis, sim. CPU':>16}  runs (events/s)")
        for row in self.rows:
            cpu = f"{row.cpu:.2f}" if row.cpu_ms else "-"
            others = (f"{statistics.median(row.redis_ms):.2f}, "
                      f"{statistics.median(row.sim_ms):.2f}") if row.cpu_ms else "-"
            runs = " ".join(f"{r:.0f}" for r in row.rates)
            out.append(f"{row.case:<30} {row.setting:<28} {row.rate:>9.0f} {cpu:>20} "
                       f"{others:>16}  {runs}")
        if self.api_latency:
            post, read = self.api_latency["post"], self.api_latency["timeline"]
            out.append("")
            out.append(f"API latency, one client: POST /v1/events p50 {post['p50']:.1f} ms, "
                       f"p99 {post['p99']:.1f} ms; timeline of a 500-entry incident p50 "
                       f"{read['p50']:.1f} ms, p99 {read['p99']:.1f} ms")
        if self.latency:
            lat = self.latency
            out.append("")
            out.append(f"latency, enqueue -> receipt at {lat['rate']:.0f} events/s (half the "
                       f"fleet's 150 ms capacity), {lat['setting']}, 150 ms, {lat['events']} "
                       f"events: p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, p99 "
                       f"{lat['p99']:.0f} ms, max {lat['max']:.0f} ms")
        out.append("")
        out.append(f"{'worker memory (VmRSS of the worker process)':<46} {'at rest':>8} "
                   f"{'peak':>8}")
        for name, rest, peak in self.memory:
            out.append(f"{name:<46} {rest:>6.0f} MiB {peak:>5.0f} MiB")
        out.append("")
        out.extend(self.ratios())
        out.append(f"\nbench took {elapsed:.0f} s")
        return "\n".join(out)

    def ratios(self) -> list[str]:
        def find(case: str, setting: str) -> Row | None:
            return next((r for r in self.rows if r.case.startswith(case)
                         and r.setting == setting), None)

        pool, concurrency = self.options.configs[0]
        s = f"{pool} x{concurrency}"
        lines = ["ratios (targets in brackets):"]
        single, many = find("producer send()", "one by one"), find("producer send_many",
                                                                   f"batches of {BATCH}")
        if single and many:
            lines.append(f"  send_many / send events/s: {many.rate / single.rate:.1f}x  [>= 3x]")
        http_batch = find("HTTP POST /v1/events/batch", f"8 clients, batches of {BATCH}")
        if http_batch and many:
            lines.append(f"  HTTP batch intake / send_many events/s: "
                         f"{http_batch.rate / many.rate:.2f}x  [>= 0.5x]")
        noop = find("no-op", s)
        for latency in (0, 150):
            fleet = find("fleet", f"{s}, {latency} ms")
            naive = find("naive", f"{s}, {latency} ms")
            if fleet and naive:
                lines.append(f"  fleet / naive events/s at {latency} ms: "
                             f"{fleet.rate / naive.rate:.2f}x  [>= 1x]")
            if fleet and noop:
                lines.append(f"  fleet CPU per event / no-op CPU per task at {latency} ms: "
                             f"{fleet.cpu / noop.cpu:.2f}x  [<= 1.5x]")
        fleet = find("fleet", f"{s}, 150 ms")
        if fleet:
            ideal = concurrency / 0.150
            lines.append(f"  fleet at 150 ms / (concurrency / latency = {ideal:.0f}/s): "
                         f"{fleet.rate / ideal:.2f}  [>= 0.8]")
        return lines

    def close(self) -> None:
        self.processes.close()
        for key in self.redis.scan_iter(match=f"{self.prefix}*", count=1000):
            self.redis.delete(key)


def parse_configs(text: str) -> list[tuple[str, int]]:
    configs = []
    for item in text.split(","):
        pool, _, concurrency = item.partition(":")
        configs.append((pool, int(concurrency)))
    return configs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="more events and repeats, and the pool sweep")
    parser.add_argument("--events", type=int, help="events per throughput run")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--pools", help="pool:concurrency list; the first one is compared "
                        "with the baselines (default threads:64)")
    parser.add_argument("--redis-url", help=f"default {REDIS_URL}; with --scale, an embedded "
                        "Redis of its own")
    parser.add_argument("--ack-waker", type=float, help="the fleet worker's ack waker "
                        "interval in seconds (0: off; default: the fleet's 0.02)")
    parser.add_argument("--skip", default="",
                        help="comma list of: producer,intake,baselines,fleet")
    parser.add_argument("--scale", action="store_true", help="only the scaling cases of "
                        "bench/scale.py: circuit close, rate gate, maintenance lookups")
    parser.add_argument("--size", type=int, default=100_000,
                        help="waiting slots and windows for --scale")
    parser.add_argument("--before", metavar="REV", help="with --scale, also run the code of "
                        "commit REV, side by side")
    parser.add_argument("--registry", action="store_true",
                        help="only the run-time destinations bench (bench/registry.py)")
    parser.add_argument("--destinations", type=int, default=100_000,
                        help="with --registry: how many destinations to register")
    args = parser.parse_args(argv)
    if args.scale:
        from bench.scale import run_scale

        return run_scale(args.size, args.redis_url, args.before)
    if args.registry:
        from bench import registry

        return registry.main(args.redis_url or REDIS_URL, args.destinations,
                             args.events or 3000, args.repeats or 2)
    full = args.full
    options = Options(
        events=args.events or (5000 if full else 2000),
        repeats=args.repeats or (5 if full else 3),
        single=1000 if full else 500,
        configs=parse_configs(args.pools or (
            "threads:64,threads:32,threads:128,prefork:16" if full else "threads:64")),
        latency_seconds=15.0 if full else 8.0,
        redis_url=args.redis_url or REDIS_URL,
        ack_waker=args.ack_waker,
    )
    skip = set(filter(None, args.skip.split(",")))
    began = time.monotonic()
    bench = Bench(options)
    try:
        bench.start_simulator()
        if "producer" not in skip:
            bench.producer_case()
        if "intake" not in skip:
            from bench.intake import intake_case

            bench.api_latency = intake_case(bench)
        pool, concurrency = options.configs[0]
        if "baselines" not in skip:
            bench.baseline_case(pool, concurrency)
        for index, (pool, concurrency) in enumerate(options.configs):
            if "fleet" not in skip:
                bench.fleet_case(pool, concurrency, with_latency=index == 0)
        print(bench.report(time.monotonic() - began))
        print(f"(logs in {bench.workdir})")
        return 0
    finally:
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
