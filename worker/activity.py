"""Per-minute delivery figures in Redis: what the console charts over the last hour.

Each worker process counts what it did in memory — attempts by outcome (`retried`: 5xx,
timeouts, network; `throttled`: PagerDuty's 429), events by final state (`delivered`,
`dead_lettered`) and their enqueue-to-delivered latency in log-spaced buckets — and adds
it to one Redis hash per minute (`keys.activity(minute)`) about once a second from a daemon
thread. That is one pipelined round trip a second per busy process however many events it
delivers, and nothing on the delivery path but a lock and a dict update. The hashes expire
after `KEEP_SECONDS`. A worker killed outright loses at most its last second's figures:
these are charts, not records (the timeline is the record).

`last_hour()` reads them back, one `Minute` per minute, with p50/p95/p99 of the latency
(each the upper bound of its bucket: at most `BUCKET_RATIO` above the true value).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import Counter
from dataclasses import dataclass, field

import redis

from config.keyspace import Keyspace

log = logging.getLogger(__name__)

# Outcomes counted per minute, in the order charts show them.
OUTCOMES = ("delivered", "retried", "dead_lettered", "throttled")
PERCENTILES = (50, 95, 99)
# Latency buckets grow by this factor (19 % wide), from 1 ms: 4 per doubling, about 100 up
# to a day, and a minute's hash holds only the buckets it used.
BUCKET_RATIO = 2 ** 0.25
LATENCY_FIELD = "latency:"
# A minute's hash outlives the hour the charts show, with a margin for clock skew.
KEEP_SECONDS = 2 * 3600
MINUTES_SHOWN = 60
FLUSH_SECONDS = 1.0


def bucket_of(millis: float) -> int:
    """The latency bucket holding `millis`: bucket b spans (ratio^(b-1), ratio^b] ms."""
    if millis <= 1:
        return 0
    return math.ceil(math.log(millis, BUCKET_RATIO) - 1e-9)


def bucket_bound(bucket: int) -> float:
    """The upper bound of a bucket, in milliseconds."""
    return float(BUCKET_RATIO ** bucket)


def percentile(buckets: dict[int, int], percent: float) -> float | None:
    """The `percent`-th percentile of bucketed latencies (a bucket's upper bound), or None
    when there are none."""
    total = sum(buckets.values())
    if total == 0:
        return None
    rank = math.ceil(total * percent / 100)
    seen = 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen >= rank:
            return bucket_bound(bucket)
    return bucket_bound(max(buckets))  # unreachable: the ranks add up to total


@dataclass
class Minute:
    """One minute's figures across the fleet."""

    start_ms: int
    counts: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[int, float | None] = field(default_factory=dict)  # percentile -> ms
    delivered_timed: int = 0  # deliveries whose latency was measured


class ActivityRecorder:
    """Counts one process's deliveries and adds them to Redis about once a second.

    Thread-safe; after a fork the child starts its own flusher on first use and never
    sends the parent's unflushed counts twice.
    """

    def __init__(self, client: redis.Redis, keys: Keyspace, *,
                 flush_seconds: float = FLUSH_SECONDS) -> None:
        self._client, self._keys, self._flush_seconds = client, keys, flush_seconds
        self._lock = threading.Lock()
        self._pending: dict[int, Counter[str]] = {}
        self._pid = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def attempt(self, destination: str, kind: str, http_status: int | None,
                now_ms: int) -> None:
        """Count one request that will be retried (`kind` retry): 429s apart from the rest.
        Delivered and permanent attempts are counted by `final`."""
        if kind != "retry" or _internal(destination):
            return
        self._add(now_ms, "throttled" if http_status == 429 else "retried")

    def final(self, destination: str, state: str, enqueued_at_ms: int, now_ms: int) -> None:
        """Count one event reaching `state`; a delivered one also its latency."""
        if state not in ("delivered", "dead_lettered") or _internal(destination):
            return
        extra = ()
        if state == "delivered":
            extra = (LATENCY_FIELD + str(bucket_of(max(0, now_ms - enqueued_at_ms))),)
        self._add(now_ms, state, *extra)

    def _add(self, now_ms: int, *names: str) -> None:
        with self._lock:
            self._ensure_flusher()
            counts = self._pending.setdefault(now_ms // 60_000, Counter())
            for name in names:
                counts[name] += 1

    def _ensure_flusher(self) -> None:
        if self._pid == os.getpid():
            return
        # first use in this process (or a forked child): the parent's counts are its own
        self._pid, self._pending = os.getpid(), {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitao-activity",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_seconds):
            self.flush()

    def flush(self) -> None:
        """Add the counts gathered so far to Redis (kept for the next flush on failure)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        pipe = self._client.pipeline(transaction=False)
        for minute, counts in pending.items():
            key = self._keys.activity(minute)
            for name, number in counts.items():
                pipe.hincrby(key, name, number)
            pipe.expire(key, KEEP_SECONDS)
        try:
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("activity: cannot write the per-minute figures (%s); kept for the "
                        "next try", exc.__class__.__name__)
            with self._lock:
                for minute, counts in pending.items():
                    self._pending.setdefault(minute, Counter()).update(counts)

    def close(self) -> None:
        """Stop the flusher and write what is left (in this process)."""
        if self._pid != os.getpid():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.flush()


def _internal(destination: str) -> bool:
    # `@callback` and such carry MoniTao's own state changes, not PagerDuty deliveries.
    return destination.startswith("@")


def last_hour(client: redis.Redis, keys: Keyspace, now_ms: int,
              minutes: int = MINUTES_SHOWN) -> list[Minute]:
    """The fleet's figures for each of the last `minutes` minutes (the current one last),
    in one round trip."""
    current = now_ms // 60_000
    span = range(current - minutes + 1, current + 1)
    pipe = client.pipeline(transaction=False)
    for minute in span:
        pipe.hgetall(keys.activity(minute))
    result = []
    for minute, stored in zip(span, pipe.execute(), strict=True):
        counts = {name: int(stored.get(name, 0)) for name in OUTCOMES}
        buckets = {int(name.removeprefix(LATENCY_FIELD)): int(value)
                   for name, value in stored.items() if name.startswith(LATENCY_FIELD)}
        result.append(Minute(minute * 60_000, counts,
                             {p: percentile(buckets, p) for p in PERCENTILES},
                             sum(buckets.values())))
    return result
