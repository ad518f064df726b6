"""Fixtures: a running webhook receiver (uvicorn in a thread) on the test Redis and prefix;
webhook bodies, posting them, and reading back what was recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis

from config.keyspace import Keyspace
from config.settings import Settings, load_settings
from tests.conftest import FAST
from webhooks import WebhookService
from worker import timeline
from worker.metrics import WEBHOOKS

SECRET_A = "whsec-test-A-6f1c0e9b2d7a"
SECRET_B = "whsec-test-B-93aa51c07e4d"


@pytest.fixture
def webhook_settings(redis_url: str, prefix: str) -> Settings:
    """Settings with two subscription secrets (a rotation in progress)."""
    return load_settings(redis_url=redis_url, key_prefix=prefix,
                         webhook_secrets=f"{SECRET_A},{SECRET_B}", **FAST)


@pytest.fixture
def receiver(webhook_settings: Settings) -> Iterator[WebhookService]:
    """The receiver and its processor, serving on a free port."""
    with WebhookService(webhook_settings, claim_idle_seconds=60, block_seconds=0.2) as service:
        yield service


DEDUP = "monitao-monitor-123-incident-456"


def event_body(event_id: str = "01EVENT", event_type: str = "incident.acknowledged",
               dedup_key: str | None = DEDUP, agent: str = "Jane Responder") -> bytes:
    data: dict[str, object] = {"id": "PINC1", "type": "incident", "status": "acknowledged",
                               "service": {"id": "PSVC", "summary": "web"}}
    if dedup_key is not None:
        data["incident_key"] = dedup_key
    return json.dumps({"event": {
        "id": event_id, "event_type": event_type, "resource_type": "incident",
        "occurred_at": "2026-11-27T10:15:00.000Z",
        "agent": {"id": "PUSR", "summary": agent, "type": "user_reference"}, "data": data,
    }}).encode()


def post(service: WebhookService, body: bytes, signature: str | None,
         webhook_id: str | None = "wh-1", **headers: str) -> httpx.Response:
    sent = {"Content-Type": "application/json", **headers}
    if signature is not None:
        sent["X-PagerDuty-Signature"] = signature
    if webhook_id is not None:
        sent["X-Webhook-Id"] = webhook_id
    return httpx.post(service.url, content=body, headers=sent, timeout=10)


@pytest.fixture
def keys(prefix: str) -> Keyspace:
    return Keyspace(prefix)


@pytest.fixture
def incident(redis_conn: redis.Redis, keys: Keyspace) -> str:
    """Incident 456 has a timeline (the fleet sent its trigger to destination prod)."""
    redis_conn.xadd(keys.timeline("456"), dict(zip(*[iter(timeline.entry(
        "delivered", "ev-1", "trigger", "prod", DEDUP))] * 2, strict=True)))
    return "456"


def entries(redis_conn: redis.Redis, keys: Keyspace, incident_id: str = "456") -> list[dict]:
    return [e for e in timeline.read(redis_conn, keys, incident_id)
            if e["stage"].startswith("pagerduty_")]


def counted(event_type: str, result: str) -> float:
    return WEBHOOKS.labels(event_type, result)._value.get()


def nothing_recorded(redis_conn: redis.Redis, prefix: str) -> bool:
    return list(redis_conn.scan_iter(match=f"{prefix}webhook-seen:*")) == [] and \
        redis_conn.xlen(f"{prefix}webhook-inbox") == 0
