"""Events per second of `monitao-pd worker` processes against the local simulator.

    .venv/bin/python bench/throughput.py --concurrency 32 --events 3000 --latency-ms 150

Starts the simulator (`--latency-ms`, no rate limit) and `--workers` workers (threads
pool) as processes of their own, against the local Redis (database 9, a prefix of its
own, deleted afterwards), with one destination whose budget is far above the load. Once every worker
answers a ping, it sends `--events` triggers for as many incidents with `send_many` (in
batches of 500) and times from the first send until every event is `delivered`. Prints
one line: events/s, the ideal (workers x concurrency / latency), the workers' CPU time
per event and one worker's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from cli.health_command import ping_workers
from config.embedded_redis import free_port
from config.settings import load_settings
from producer import AlertProducer

REDIS_URL = "redis://127.0.0.1:6379/9"
BATCH = 500


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="monitao-pd-bench-"))
    config = workdir / "destinations.toml"
    config.write_text(
        f'[destinations.bench]\nrouting_key_env = "PD_KEY_BENCH"\n'
        f'events_url = "http://127.0.0.1:{port}/v2/enqueue"\nrate_limit_per_minute = 100000\n')
    env = dict(os.environ, MONITAO_PD_REDIS_URL=REDIS_URL, MONITAO_PD_KEY_PREFIX=prefix,
               MONITAO_PD_CONFIG=str(config), PD_KEY_BENCH=uuid.uuid4().hex,
               MONITAO_PD_LOG_LEVEL="WARNING")
    python = [sys.executable, "-m", "cli.main"]
    processes = [
        subprocess.Popen([*python, "simulator", "--port", str(port), "--latency-ms",
                          str(args.latency_ms), "--rate-limit", "0"], env=env,
                         start_new_session=True, stdout=subprocess.DEVNULL),
    ]
    workers = [subprocess.Popen([*python, "worker", "--pool", "threads", "--concurrency",
                                 str(args.concurrency), "--name", f"bench{n}@%h"],
                                env=env, start_new_session=True)
               for n in range(args.workers)]
    processes += workers
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        for name, value in env.items():
            if name.startswith("MONITAO_PD_") or name == "PD_KEY_BENCH":
                os.environ[name] = value
        settings = load_settings()
        replies: list[str] = []
        deadline = time.monotonic() + 60
        while len(replies) < args.workers and time.monotonic() < deadline:
            replies = ping_workers(settings, timeout=1.0)
        if len(replies) < args.workers:
            print(f"workers did not start: {replies}", file=sys.stderr)
            return 1
        cpu_before = sum(_cpu_seconds(w.pid) for w in workers)
        producer = AlertProducer(settings)
        events = [{"action": "trigger", "monitor_id": 1, "incident_id": f"b{n}",
                   "summary": "[DOWN] bench"} for n in range(args.events)]
        started = time.monotonic()
        ids: list[str] = []
        for first in range(0, len(events), BATCH):
            ids.extend(producer.send_many(events[first:first + BATCH]))
        peak_rss = 0
        deadline = started + args.timeout
        while True:
            pipe = client.pipeline(transaction=False)
            for event_id in ids:
                pipe.hget(f"{prefix}event:{event_id}", "state")
            states = pipe.execute()
            peak_rss = max(peak_rss, max(_rss_kib(w.pid) for w in workers))
            if all(state == "delivered" for state in states):
                break
            if time.monotonic() > deadline:
                done = sum(state == "delivered" for state in states)
                print(f"timed out: {done}/{len(ids)} delivered", file=sys.stderr)
                return 1
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        cpu = sum(_cpu_seconds(w.pid) for w in workers) - cpu_before
        ideal = args.workers * args.concurrency / (args.latency_ms / 1000)
        print(f"workers={args.workers} concurrency={args.concurrency} events={len(ids)} "
              f"seconds={elapsed:.1f} events/s={len(ids) / elapsed:.0f} ideal={ideal:.0f}/s "
              f"ratio={len(ids) / elapsed / ideal:.2f} worker_cpu_ms/event="
              f"{1000 * cpu / len(ids):.1f} worker_peak_rss={peak_rss // 1024} MiB")
        return 0
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
