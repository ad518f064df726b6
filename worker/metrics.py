"""Prometheus metrics of the worker fleet (prometheus-client), served by each worker.

Two kinds, to be aggregated differently when several workers are scraped:

- **Per-process counters and histograms**, fed by the delivery pass through
  `record_attempt()` and `record_final()`: each worker counts what it did, so sum them
  across workers (`sum by (destination, outcome) (rate(monitao_pd_attempts_total[5m]))`).
- **Fleet-wide gauges**, read from Redis at scrape time by `RedisStateCollector`: every
  worker reports the same values, so take `max()` across workers, never `sum()`.

Each worker process serves its own exporter (`metrics_port`; the threads pool is one
process). With the prefork pool, deliveries run in child processes: set
`PROMETHEUS_MULTIPROC_DIR` (an empty directory) before starting the worker, and the
exporter aggregates the children's files (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from celery import bootsteps
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from config import defaults
from config.destinations import Destination
from config.keyspace import Keyspace
from config.lookup import OTHER_LABEL
from worker.fleet_state import DestinationState, FleetState, read_state

log = logging.getLogger(__name__)

# What this process did; registered again on each exporter's registry.
REGISTRY = CollectorRegistry(auto_describe=True)

ATTEMPTS = Counter(
    "monitao_pd_attempts", "Requests sent to PagerDuty, by destination and outcome "
    "(delivered: 2xx; retry: 429, 5xx, timeout, network; permanent: other 4xx).",
    ["destination", "outcome"], registry=REGISTRY,
)
ATTEMPT_SECONDS = Histogram(
    "monitao_pd_attempt_duration_seconds", "Time of one request to PagerDuty.",
    ["destination"], registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0),
)
FINISHED = Counter(
    "monitao_pd_events_finished", "Events that reached a final state, by destination, "
    "state (delivered, dead_lettered, superseded, ...) and reason (dead letters).",
    ["destination", "state", "reason"], registry=REGISTRY,
)
THROTTLED = Counter(
    "monitao_pd_throttled_attempts", "Requests PagerDuty answered 429 Too Many Requests, by "
    "destination (counted in monitao_pd_attempts_total as retry too).",
    ["destination"], registry=REGISTRY,
)
ENQUEUE_TO_DELIVERED = Histogram(
    "monitao_pd_enqueue_to_delivered_seconds",
    "From an event's enqueue (or replay) to its delivery, including every wait.",
    ["destination"], registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
             3600.0, 4 * 3600.0, 24 * 3600.0),
)

# Outcome names `record_attempt` accepts (anything else is counted as given, but is a bug).
ATTEMPT_OUTCOMES = ("delivered", "retry", "permanent")
CIRCUIT_VALUES = {"closed": 0, "open": 1, "half_open": 2}


def record_attempt(destination: str, outcome: str, latency_seconds: float,
                   http_status: int | None = None) -> None:
    """Count one request to PagerDuty and its latency (outcome: delivered/retry/permanent),
    and a 429 answer apart."""
    ATTEMPTS.labels(destination, outcome).inc()
    if http_status == 429:
        THROTTLED.labels(destination).inc()
    ATTEMPT_SECONDS.labels(destination).observe(max(0.0, latency_seconds))


def record_final(destination: str, state: str, reason: str, enqueued_at_ms: int,
                 now_ms: int) -> None:
    """Count one event reaching `state`; a delivered one also feeds enqueue-to-delivered."""
    FINISHED.labels(destination, state, reason or "").inc()
    if state == "delivered":
        ENQUEUE_TO_DELIVERED.labels(destination).observe(max(0.0, (now_ms - enqueued_at_ms)
                                                              / 1000))


class RedisStateCollector:
    """Fleet-wide gauges read from Redis at scrape time (the same from every worker).

    Give it a worker's `FleetContext` (Redis, keyspace and destinations are taken from it,
    lazily), or a Redis client with `keys` and `destinations`. Readings are cached for
    `min_interval` seconds so that several scrapers cost one reading. When Redis does not
    answer, only `monitao_pd_redis_up 0` is served.
    """

    def __init__(self, ctx_or_client: Any, keys: Keyspace | None = None,
                 destinations: Mapping[str, Destination] | None = None, *,
                 broker: redis.Redis | None = None, min_interval: float = 2.0) -> None:
        self._source = ctx_or_client
        self._keys, self._destinations, self._broker = keys, destinations, broker
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._cached: tuple[float, FleetState | None] | None = None

    def _client(self) -> redis.Redis:
        return self._source if isinstance(self._source, redis.Redis) else self._source.redis

    def _state(self) -> FleetState | None:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.min_interval:
                return self._cached[1]
            source = self._source
            keys = self._keys or source.keys
            destinations = self._destinations if self._destinations is not None else (
                getattr(source, "destinations", None))
            settings = getattr(source, "settings", None)
            options: dict[str, Any] = {}
            if settings is not None:
                options.update(circuit_threshold=settings.circuit_threshold,
                               rate_window_seconds=settings.rate_window_seconds)
            broker = self._broker
            if broker is None and settings is not None and (
                    settings.celery_broker_url == settings.redis_url):
                broker = self._client()
            try:
                state: FleetState | None = read_state(self._client(), keys, destinations,
                                                      broker=broker, **options)
            except (redis.RedisError, OSError) as exc:
                log.warning("metrics: cannot read the fleet state from Redis (%s)",
                            exc.__class__.__name__)
                state = None
            self._cached = (time.monotonic(), state)
            return state

    def describe(self) -> list[Metric]:
        # Nothing to check at registration; reading Redis there would block start-up.
        return []

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        yield GaugeMetricFamily("monitao_pd_redis_up",
                                "1 when this worker could read the fleet state from Redis.",
                                value=0 if state is None else 1)
        if state is None:
            return
        settings = getattr(self._source, "settings", None)
        yield from _fleet_gauges(state, settings.metrics_max_destinations if settings is not None
                                 else defaults.METRICS_MAX_DESTINATIONS)


def destination_label(state: DestinationState, aggregate: bool) -> str:
    """A destination's label in the fleet gauges: its name, or once the fleet has more
    destinations than `MONITAO_PD_METRICS_MAX_DESTINATIONS`, `account:ACCOUNT` or `other`
    (as `DestinationLookup.metrics_label` labels the counters)."""
    if not aggregate or state.name.startswith("@"):
        return state.name
    return f"account:{state.account}" if state.account else OTHER_LABEL


def _by_label(state: FleetState, max_destinations: int) -> dict[str, DestinationState]:
    """The destinations' states, summed per label when they are aggregated."""
    aggregate = state.destinations_known > max_destinations
    if not aggregate:
        return dict(state.destinations)
    merged: dict[str, DestinationState] = {}
    for d in state.destinations.values():
        label = destination_label(d, aggregate)
        into = merged.setdefault(label, DestinationState(label, circuit="closed"))
        into.pending_events += d.pending_events
        into.cooling_down = into.cooling_down or d.cooling_down
        into.cooldown_remaining_seconds = max(into.cooldown_remaining_seconds,
                                              d.cooldown_remaining_seconds)
        into.rate_waiting_keys += d.rate_waiting_keys
        into.rate_window_requests += d.rate_window_requests
        if d.rate_limit_per_minute is not None:
            into.rate_limit_per_minute = (into.rate_limit_per_minute or 0) + \
                d.rate_limit_per_minute
        if CIRCUIT_VALUES.get(d.circuit, -1) > CIRCUIT_VALUES.get(into.circuit, -1):
            into.circuit = d.circuit
        into.circuit_failures = max(into.circuit_failures, d.circuit_failures)
    return merged


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _fleet_gauges(state: FleetState,
                  max_destinations: int = defaults.METRICS_MAX_DESTINATIONS) -> Iterator[Metric]:
    yield _gauge("monitao_pd_scheduled_keys",
                 "Keys (destination, dedup_key) with pending events (fleet-wide).",
                 state.scheduled_keys)
    yield _gauge("monitao_pd_due_keys", "Keys due now, waiting for a deliver task (fleet-wide).",
                 state.due_keys)
    yield _gauge("monitao_pd_keys_in_flight",
                 "Keys a worker is delivering right now: held leases (fleet-wide).",
                 state.in_flight)
    yield _gauge("monitao_pd_keys_backing_off",
                 "Keys waiting out a backoff after a failed attempt (fleet-wide).",
                 state.backing_off)
    oldest = state.oldest_pending_age_seconds
    yield _gauge("monitao_pd_oldest_pending_age_seconds",
                 "Age of the oldest pending event at the head of a key; 0 when none pends.",
                 oldest or 0.0)
    yield _gauge("monitao_pd_replays_pending",
                 "Replayed dead letters not delivered yet (fleet-wide).", state.replays_pending)
    if state.queue_length is not None:
        yield _gauge("monitao_pd_queue_length", "Deliver tasks waiting in the broker queue.",
                     state.queue_length)

    pending = GaugeMetricFamily("monitao_pd_pending_events",
                                "Events waiting to be delivered (fleet-wide).",
                                labels=["destination"])
    dead = GaugeMetricFamily("monitao_pd_dead_letters", "Dead letters by reason (fleet-wide).",
                             labels=["reason"])
    cooling = GaugeMetricFamily("monitao_pd_destination_cooling_down",
                                "1 while a destination's routing key cools down after a 429.",
                                labels=["destination"])
    cool_left = GaugeMetricFamily("monitao_pd_destination_cooldown_remaining_seconds",
                                  "Seconds left in a destination's 429 cooldown.",
                                  labels=["destination"])
    waiting = GaugeMetricFamily("monitao_pd_rate_limit_waiting_keys",
                                "Keys waiting for their destination's rate budget.",
                                labels=["destination"])
    window = GaugeMetricFamily("monitao_pd_rate_window_requests",
                               "Requests in the destination's current rate window.",
                               labels=["destination"])
    budget = GaugeMetricFamily("monitao_pd_rate_limit_per_minute",
                               "The destination's configured budget per window.",
                               labels=["destination"])
    circuit = GaugeMetricFamily("monitao_pd_circuit_state",
                                "Circuit of the destination's Events endpoint: "
                                "0 closed, 1 open, 2 half-open (a probe may go).",
                                labels=["destination"])
    failures = GaugeMetricFamily("monitao_pd_circuit_failures",
                                 "Failures in a row of the destination's Events endpoint.",
                                 labels=["destination"])
    for reason, number in state.dead_letters.items():
        dead.add_metric([reason], number)
    for name, d in sorted(_by_label(state, max_destinations).items()):
        pending.add_metric([name], d.pending_events)
        cooling.add_metric([name], 1 if d.cooling_down else 0)
        cool_left.add_metric([name], d.cooldown_remaining_seconds)
        waiting.add_metric([name], d.rate_waiting_keys)
        window.add_metric([name], d.rate_window_requests)
        if d.rate_limit_per_minute is not None:
            budget.add_metric([name], d.rate_limit_per_minute)
        if d.circuit in CIRCUIT_VALUES:
            circuit.add_metric([name], CIRCUIT_VALUES[d.circuit])
            failures.add_metric([name], d.circuit_failures)
    yield from (pending, dead, cooling, cool_left, waiting, window, budget, circuit, failures)


@dataclass
class Exporter:
    """A running exporter: its port, and how to stop it."""

    port: int
    address: str
    registry: CollectorRegistry
    _server: Any
    _thread: threading.Thread

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def exporter_registry(state_collector: RedisStateCollector | None = None) -> CollectorRegistry:
    """A registry with this process's metrics (or, in multiprocess mode, every process's of
    the worker) and, if given, the fleet-wide gauges."""
    registry = CollectorRegistry(auto_describe=True)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        for metric in (ATTEMPTS, ATTEMPT_SECONDS, THROTTLED, FINISHED, ENQUEUE_TO_DELIVERED):
            registry.register(metric)
    if state_collector is not None:
        registry.register(state_collector)
    return registry


def start_exporter(port: int, address: str,
                   state_collector: RedisStateCollector | None = None) -> Exporter:
    """Serve `/metrics` on `address:port` from a daemon thread; raise OSError if taken."""
    registry = exporter_registry(state_collector)
    server, thread = start_http_server(port, address, registry=registry)
    return Exporter(server.server_address[1], address, registry, server, thread)


class MetricsStep(bootsteps.StartStopStep):
    """Starts the worker's exporter when `metrics_port` is set (added in `create_app`).

    A port that is taken is logged as an error and the worker runs on without metrics:
    deliveries matter more than their counts.
    """

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.exporter: Exporter | None = None

    def start(self, worker: Any) -> None:
        fleet = worker.app.fleet
        settings = fleet.settings
        if not settings.metrics_port or self.exporter is not None:
            return
        if settings.worker_pool == "prefork" and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            log.warning("metrics: with the prefork pool, set PROMETHEUS_MULTIPROC_DIR or the "
                        "delivery counters stay in the child processes")
        try:
            self.exporter = start_exporter(settings.metrics_port, settings.metrics_address,
                                           RedisStateCollector(fleet))
        except OSError as exc:
            log.error("metrics: cannot serve on %s:%s (%s); running without metrics",
                      settings.metrics_address, settings.metrics_port, exc)
            return
        log.info("metrics: serving http://%s:%d/metrics", settings.metrics_address,
                 self.exporter.port)

    def stop(self, worker: Any) -> None:
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None

    # A cold shutdown (and the test worker's exit) terminates steps instead of stopping them.
    shutdown = terminate = stop


# The webhook receiver (`monitao-pd webhooks`): PagerDuty's webhooks v3 by what became of
# them. result: matched (recorded in an incident's timeline), unmatched (no MoniTao
# incident), invalid (not a webhook v3 event), ignored (a type that is not synced),
# failed (processing failed on every attempt; set aside), duplicate (a delivery id or signed
# event id seen before); refused: unauthorized (bad or missing signature), too_large (413),
# not_json (400), timeout (not read whole in time; closed), bad_request (not HTTP),
# overloaded (503, the concurrency limit).
WEBHOOKS = Counter(
    "monitao_pd_webhooks", "PagerDuty webhooks received, by event type and result "
    "(matched, unmatched, invalid, ignored, failed, duplicate; refused: unauthorized, "
    "too_large, not_json, timeout, bad_request, overloaded).",
    ["event_type", "result"], registry=REGISTRY,
)


def record_webhook(event_type: str, result: str) -> None:
    """Count one PagerDuty webhook (`event_type` from a fixed set, `other` for the rest)."""
    WEBHOOKS.labels(event_type, result).inc()
