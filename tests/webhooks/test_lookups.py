"""Webhooks without an incident_key: the processor looks the incident up at the simulator
(GET /incidents/{id} over HTTPS, through PagerDuty's client) with the REST credentials of
a destination of the incident's service, remembers the answer, and defers lookups over the
token's rate limit or while PagerDuty fails."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest
import redis

from config.keyspace import Keyspace
from config.registry import registry_for
from config.secrets import fingerprint, generate_key
from config.settings import Settings, load_settings
from simulator import DEMO_API_TOKEN, Simulator
from tests.conftest import FAST, random_routing_key, wait_until
from tests.webhooks.conftest import entries
from tests.webhooks.test_subscriptions import everything_stored, trigger, with_timeline
from webhooks import WebhookService, signature_header
from webhooks.processor import GROUP

SECRET = "whsec-lookups-test-51d2e0"
DEDUP = "monitao-monitor-9-incident-look-1"
INCIDENT = "look-1"


@pytest.fixture
def routing_key() -> str:
    return random_routing_key()


def make_settings(sim: Simulator, redis_url: str, prefix: str, **overrides: Any) -> Settings:
    return load_settings(redis_url=redis_url, key_prefix=prefix, webhook_secrets=SECRET,
                         secret_keys=generate_key(), rest_ca_file=sim.ca_file,
                         **{**FAST, **overrides})


@pytest.fixture
def start(sim: Simulator, redis_url: str, prefix: str, redis_conn: redis.Redis,
          routing_key: str) -> Callable[..., AbstractContextManager[WebhookService]]:
    """A receiver whose PagerDuty (the simulator) sends webhooks without incident_key;
    `credentials`: a run-time destination with REST credentials for PSIMSVC exists."""

    @contextmanager
    def run(credentials: bool = True, max_attempts: int = 5,
            **overrides: Any) -> Iterator[WebhookService]:
        settings = make_settings(sim, redis_url, prefix, **overrides)
        fields: dict[str, Any] = {"events_url": sim.events_url}
        if credentials:
            fields |= {"pagerduty_service_id": "PSIMSVC", "pagerduty_api_url":
                       sim.rest_url, "pagerduty_from": "ops@example.com"}
        registry_for(settings, redis_conn).add(
            "prod", fields, routing_key, api_token=DEMO_API_TOKEN if credentials else None)
        with WebhookService(settings, claim_idle_seconds=1, block_seconds=0.2,
                            max_attempts=max_attempts) as service:
            sim.set_webhook(service.url, SECRET, include_incident_key=False)
            yield service

    return run


def lookups(sim: Simulator) -> list[dict[str, Any]]:
    return [r for r in sim.rest_requests() if r["path"].startswith("/incidents/")]


def stages(redis_conn: redis.Redis, keys: Keyspace) -> list[str]:
    return [e["stage"] for e in entries(redis_conn, keys, INCIDENT)]


def unmatched(redis_conn: redis.Redis, keys: Keyspace) -> list[dict[str, str]]:
    return [fields for _, fields in redis_conn.xrange(keys.webhook_unmatched)]


def test_a_webhook_without_a_key_is_matched_through_one_lookup(
        start: Callable[..., AbstractContextManager[WebhookService]], sim: Simulator,
        redis_conn: redis.Redis, prefix: str, routing_key: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys = Keyspace(prefix)
    with start():
        with_timeline(redis_conn, keys, INCIDENT, DEDUP)
        trigger(sim, routing_key, DEDUP)
        sim.respond(DEDUP, "acknowledge", "Jane Responder")
        wait_until(lambda: stages(redis_conn, keys) == ["pagerduty_acknowledged"], 15,
                   message="the acknowledgement matched through the lookup")
        [lookup] = lookups(sim)
        assert lookup["method"] == "GET" and lookup["status"] == 200 and lookup["token_ok"]
        pd_incident = lookup["path"].rsplit("/", 1)[1]
        assert redis_conn.get(keys.webhook_pd_incident(pd_incident)) == DEDUP
        sim.respond(DEDUP, "resolve", "Jane Responder")
        wait_until(lambda: stages(redis_conn, keys) == ["pagerduty_acknowledged",
                                                        "pagerduty_resolved"], 15,
                   message="the resolve matched without a second lookup")
        assert len(lookups(sim)) == 1
        deliveries = sim.webhook_deliveries()
        assert deliveries and all(d["status"] == 202 for d in deliveries)
    assert unmatched(redis_conn, keys) == []
    assert DEMO_API_TOKEN not in everything_stored(redis_conn, prefix)
    assert DEMO_API_TOKEN not in caplog.text and SECRET not in caplog.text


def test_without_credentials_it_stays_unmatched(
        start: Callable[..., AbstractContextManager[WebhookService]], sim: Simulator,
        redis_conn: redis.Redis, prefix: str, routing_key: str) -> None:
    keys = Keyspace(prefix)
    with start(credentials=False):
        with_timeline(redis_conn, keys, INCIDENT, DEDUP)
        trigger(sim, routing_key, DEDUP)
        sim.respond(DEDUP, "acknowledge")
        [kept] = wait_until(lambda: unmatched(redis_conn, keys), 15,
                            message="the webhook kept as unmatched")
    assert kept["result"] == "unmatched" and kept["event_type"] == "incident.acknowledged"
    assert "no destination has REST credentials" in kept["reason"]
    assert lookups(sim) == [] and stages(redis_conn, keys) == []


def test_an_incident_pagerduty_does_not_know_is_unmatched_with_the_reason(
        start: Callable[..., AbstractContextManager[WebhookService]], sim: Simulator,
        redis_conn: redis.Redis, prefix: str) -> None:
    keys = Keyspace(prefix)
    body = json.dumps({"event": {
        "id": "01UNKNOWN", "event_type": "incident.acknowledged",
        "occurred_at": "2026-11-27T10:15:00Z", "agent": {"summary": "Jane"},
        "data": {"id": "PNOSUCH1", "type": "incident", "status": "acknowledged",
                 "service": {"id": "PSIMSVC"}}}}).encode()
    with start() as service:
        answer = httpx.post(service.url, content=body, timeout=5, headers={
            "X-PagerDuty-Signature": signature_header([SECRET], body)})
        assert answer.status_code == 202
        [kept] = wait_until(lambda: unmatched(redis_conn, keys), 15,
                            message="the webhook kept as unmatched")
    assert kept["result"] == "unmatched" and "PagerDuty has no incident PNOSUCH1" in \
        kept["reason"]
    assert [r["status"] for r in lookups(sim)] == [404]


def test_the_rate_limit_defers_lookups(
        start: Callable[..., AbstractContextManager[WebhookService]], sim: Simulator,
        redis_conn: redis.Redis, prefix: str, routing_key: str) -> None:
    keys = Keyspace(prefix)
    minute = int(time.time() // 60)
    spent = [keys.rest_rate(fingerprint(DEMO_API_TOKEN), m) for m in (minute, minute + 1)]
    for key in spent:
        redis_conn.set(key, 3, ex=120)
    # two attempts only: waiting for the token's budget must not use them up
    with start(webhook_lookups_per_minute=3, max_attempts=2) as service:
        with_timeline(redis_conn, keys, INCIDENT, DEDUP)
        trigger(sim, routing_key, DEDUP)
        sim.respond(DEDUP, "acknowledge")
        wait_until(lambda: redis_conn.xpending(keys.webhook_inbox, GROUP)["pending"] == 1
                   and any(d["event_type"] == "incident.acknowledged" and d["status"] == 202
                           for d in sim.webhook_deliveries()), 15,
                   message="the acknowledgement queued and pending")
        # taken over and deferred again and again (claim idle 1 s): still no lookup,
        # nothing lost, nothing set aside (the minute may turn meanwhile: both minutes'
        # counters started spent, at 3 each)
        wait_until(lambda: sum(int(redis_conn.get(key) or 0) for key in spent) >= 9, 20,
                   message="the lookup deferred three times")
        assert lookups(sim) == [] and unmatched(redis_conn, keys) == []
        [pending] = redis_conn.xpending_range(keys.webhook_inbox, GROUP, "-", "+", 10)
        assert pending["times_delivered"] <= 1
        assert service.processor.lookup is not None
        redis_conn.delete(*spent)  # a new minute
        wait_until(lambda: stages(redis_conn, keys) == ["pagerduty_acknowledged"], 20,
                   message="the deferred lookup made and matched")
    assert len(lookups(sim)) == 1


def test_a_failing_pagerduty_defers_then_gives_up_after_the_attempts(
        start: Callable[..., AbstractContextManager[WebhookService]], sim: Simulator,
        redis_conn: redis.Redis, prefix: str, routing_key: str) -> None:
    keys = Keyspace(prefix)
    with start(max_attempts=2, rest_timeout_seconds=2):
        with_timeline(redis_conn, keys, INCIDENT, DEDUP)
        trigger(sim, routing_key, DEDUP)
        sim.set_rest_faults(force_status=503)
        sim.respond(DEDUP, "acknowledge")
        [kept] = wait_until(lambda: unmatched(redis_conn, keys), 30,
                            message="the entry set aside after its attempts")
    assert kept["result"] == "failed" and "incident lookup deferred" in kept["reason"]
    assert "HTTP 503" in kept["reason"] and DEMO_API_TOKEN not in kept["reason"]
    assert {r["status"] for r in lookups(sim)} == {503}
    assert redis_conn.xlen(keys.webhook_inbox) == 0
