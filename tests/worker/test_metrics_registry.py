"""Metric labels with many destinations: past MONITAO_PD_METRICS_MAX_DESTINATIONS the
per-destination series of a real fleet aggregate under `account:ACCOUNT` or `other`."""

from __future__ import annotations

import uuid

from config.embedded_redis import free_port
from config.keyspace import Keyspace, slot_of
from config.registry import Registry
from config.secrets import generate_key, parse_key_ring
from tests.conftest import random_routing_key
from tests.worker.test_metrics import scrape, value
from worker import metrics, timeline
from worker.context import FleetContext


def test_series_aggregate_by_account_past_the_limit(make_fleet, redis_conn, prefix, sim,
                                                    destinations) -> None:
    ring = generate_key()
    account = f"acct{uuid.uuid4().hex[:8]}"
    names = [f"m{uuid.uuid4().hex[:8]}" for _ in range(3)]
    registry = Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(ring))
    for name, owner in zip(names, (account, account, None), strict=True):
        registry.add(name, {"events_url": sim.events_url, "rate_limit_per_minute": 100_000,
                            **({"account": owner} if owner else {})}, random_routing_key())
    before = scrape_running(None)
    # 3 run-time destinations and the file's `prod`: more than 2, so they aggregate
    with make_fleet(metrics_max_destinations=2, secret_keys=ring) as fleet:
        ids = [fleet.producer.send({"destination": name, "action": "trigger",
                                    "monitor_id": "1", "incident_id": name, "summary": "x"})
               for name in names]
        assert set(fleet.wait_final(ids).values()) == {"delivered"}
        keys = fleet.keys
        now = timeline.redis_millis(redis_conn)
        for name in names:  # pending events, and one cooling down
            slot = slot_of(name, "k")
            redis_conn.rpush(keys.mailbox(slot), "e")
            redis_conn.zadd(keys.schedule, {slot: now + 3_600_000})
        redis_conn.hset(keys.cooldown(names[0]), "until", now + 30_000)
        # a worker's view (settings, file destinations, the registry) reads the gauges
        context = FleetContext(fleet.settings, destinations)
        try:
            after = scrape_running(metrics.RedisStateCollector(context, min_interval=0))
        finally:
            context.close()

    def grew(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert grew("monitao_pd_attempts_total", destination=f"account:{account}",
                outcome="delivered") == 2
    assert grew("monitao_pd_attempts_total", destination="other", outcome="delivered") >= 1
    assert grew("monitao_pd_events_finished_total", destination=f"account:{account}",
                state="delivered", reason="") == 2
    labels = {dict(label).get("destination") for _, label in after}
    assert not labels & set(names)
    assert value(after, "monitao_pd_pending_events", destination=f"account:{account}") == 2
    assert value(after, "monitao_pd_pending_events", destination="other") == 1
    assert value(after, "monitao_pd_destination_cooling_down",
                 destination=f"account:{account}") == 1


def scrape_running(collector) -> dict:
    exporter = metrics.start_exporter(free_port(), "127.0.0.1", collector)
    try:
        return scrape(exporter.port)
    finally:
        exporter.close()
