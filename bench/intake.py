"""`make bench` rows for the ways in besides `send()`: the HTTP API and the intake stream.

- HTTP intake: 8 concurrent clients POST `/v1/events` one event at a time, then
  `/v1/events/batch` 500 at a time, against one `monitao-pd api` process; events/s from the
  first request to the last 202 (every event is then in Redis, as after `send()`).
- stream intake: one client XADDs the events (pipelined, 500 per round trip) and one
  intake consumer process (bench/intake_consumer.py) enqueues them; events/s from the
  first XADD until the stream is empty and nothing is pending (every event in its
  mailbox).
- API latency: p50/p99 of `POST /v1/events` (one client, one request at a time) and of
  `GET /v1/incidents/{id}/timeline` for an incident of 500 entries (one page of 500).
No worker runs: these rows measure intake, as the producer rows do.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from bench.run import Bench

CLIENTS = 8
BATCH = 500
LATENCY_REQUESTS = 300
TIMELINE_ENTRIES = 500


def intake_case(bench: Bench) -> dict[str, Any]:
    """Add the HTTP and stream intake rows to `bench.rows`; return the latency figures."""
    from bench.run import Row

    http_single = Row("HTTP POST /v1/events", f"{CLIENTS} clients, one by one")
    http_batch = Row("HTTP POST /v1/events/batch", f"{CLIENTS} clients, batches of {BATCH}")
    stream = Row("stream XADD -> mailbox", "1 client, 1 consumer")
    latency: dict[str, Any] = {}
    with ApiProcess(bench, "api:") as api:
        for _ in range(bench.options.repeats):
            http_single.rates.append(api.concurrent(bench.events(bench.options.single),
                                                    batch=None))
            http_batch.rates.append(api.concurrent(bench.events(bench.options.events),
                                                   batch=BATCH))
        latency["post"] = api.post_latency(bench.events(LATENCY_REQUESTS))
        latency["timeline"] = api.timeline_latency(bench)
    for _ in range(bench.options.repeats):
        stream.rates.append(stream_rate(bench, bench.events(bench.options.events)))
    bench.rows += [http_single, http_batch, stream]
    return latency


class ApiProcess:
    """`monitao-pd api` in its own process group, with a token of every scope."""

    def __init__(self, bench: Bench, case_prefix: str) -> None:
        self.bench, self.case_prefix = bench, case_prefix

    def __enter__(self) -> ApiProcess:
        from config import tokens
        from config.embedded_redis import free_port
        from config.keyspace import Keyspace

        bench = self.bench
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = bench.processes.start(
            "api", [sys.executable, "-m", "cli.main", "api", "--port", str(port)],
            bench.env(self.case_prefix), ready="listening on")
        self.keys = Keyspace(bench.prefix + self.case_prefix)
        self.token, _ = tokens.create(bench.redis, self.keys, "bench", list(tokens.SCOPES))
        self.headers = {"Authorization": f"Bearer {self.token}"}
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not answer")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.bench.processes.stop(self.process)

    def concurrent(self, events: list[dict[str, Any]], batch: int | None) -> float:
        """Events/s with `CLIENTS` threads posting `events` one by one or in batches."""
        bodies: list[tuple[str, Any]] = (
            [("/v1/events", event) for event in events] if batch is None else
            [("/v1/events/batch", {"events": events[i:i + batch]})
             for i in range(0, len(events), batch)])
        lock = threading.Lock()
        errors: list[str] = []

        def client() -> None:
            with httpx.Client(base_url=self.url, headers=self.headers, timeout=60) as http:
                while True:
                    with lock:
                        if not bodies:
                            return
                        path, body = bodies.pop()
                    response = http.post(path, json=body)
                    if response.status_code != 202:
                        errors.append(response.text[:200])

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        if errors:
            raise RuntimeError(f"{len(errors)} requests refused: {errors[0]}")
        return len(events) / elapsed

    def post_latency(self, events: list[dict[str, Any]]) -> dict[str, float]:
        """p50/p99 ms of POST /v1/events, one request at a time."""
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=60) as http:
            return quantiles([timed(lambda e=event: http.post("/v1/events", json=e))
                              for event in events])

    def timeline_latency(self, bench: Bench) -> dict[str, float]:
        """p50/p99 ms of reading a 500-entry incident's timeline in one page."""
        incident = f"timeline-{bench.run_id}"
        events = bench.events(TIMELINE_ENTRIES)
        for event in events:
            event["incident_id"] = incident
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=60) as http:
            assert http.post("/v1/events/batch", json={"events": events}).status_code == 202
            path = f"/v1/incidents/{incident}/timeline?limit={TIMELINE_ENTRIES}"
            assert len(http.get(path).json()["entries"]) == TIMELINE_ENTRIES
            return quantiles([timed(lambda: http.get(path)) for _ in range(LATENCY_REQUESTS)])


def timed(call: Any) -> float:
    started = time.perf_counter()
    response = call()
    elapsed = 1000 * (time.perf_counter() - started)
    if response.status_code >= 300:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    return elapsed


def quantiles(samples: list[float]) -> dict[str, float]:
    cut = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": cut[49], "p99": cut[98], "n": len(samples)}


def stream_rate(bench: Bench, events: list[dict[str, Any]]) -> float:
    """Events/s from the first XADD to the last entry enqueued by one consumer process."""
    import json

    from config.keyspace import Keyspace

    case_prefix = f"stream-{bench.counter}:"
    keys = Keyspace(bench.prefix + case_prefix)
    consumer = bench.processes.start(
        "intake-consumer", [sys.executable, "-m", "bench.intake_consumer"],
        bench.env(case_prefix))
    try:
        started = time.perf_counter()
        for first in range(0, len(events), BATCH):
            pipe = bench.redis.pipeline(transaction=False)
            for event in events[first:first + BATCH]:
                pipe.xadd(keys.intake, {"event": json.dumps(event)})
            pipe.execute()

        deadline = time.monotonic() + 300
        while bench.redis.xlen(keys.intake) or bench.redis.xpending(
                keys.intake, "fleet")["pending"]:
            if time.monotonic() > deadline or consumer.poll() is not None:
                raise RuntimeError("the intake consumer did not drain the stream")
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        if bench.redis.zcard(keys.schedule) != len(events):
            raise RuntimeError("not every event reached its mailbox")
        return len(events) / elapsed
    finally:
        bench.processes.stop(consumer)
