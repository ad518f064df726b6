"""No routing key and no API token in any response, log line or Redis value, after a
tour of every endpoint (PagerDuty's refusal, a replay, and run-time destinations whose keys
are given, used, changed and refused included)."""

from __future__ import annotations

import logging

import httpx
import pytest
import redis

from api.server import ApiService
from tests.cli.operate.support import STAGING_KEY, event
from tests.conftest import Fleet, random_routing_key


def redis_text(client: redis.Redis, prefix: str) -> str:
    """Every key under `prefix` and everything it holds, as one text."""
    parts = []
    for key in client.scan_iter(match=f"{prefix}*"):
        kind = client.type(key)
        parts.append(key)
        if kind == "string":
            parts.append(str(client.get(key)))
        elif kind == "hash":
            parts.append(str(client.hgetall(key)))
        elif kind == "list":
            parts.append(str(client.lrange(key, 0, -1)))
        elif kind == "set":
            parts.append(str(client.smembers(key)))
        elif kind == "zset":
            parts.append(str(client.zrange(key, 0, -1)))
        elif kind == "stream":
            parts.append(str(client.xrange(key)))
    return "\n".join(parts)


def test_no_routing_key_or_token_anywhere(
    api: ApiService, client: httpx.Client, fleet: Fleet, token: str, routing_key: str,
    redis_conn: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    answers = []

    def keep(response: httpx.Response) -> httpx.Response:
        answers.append(response.text + str(response.headers))
        return response

    fleet.sim.set_faults(force_status=400)
    rejected = keep(client.post("/v1/events", json=event(1, 1, "trigger"))).json()["event_id"]
    fleet.wait_final([rejected])
    keep(client.post("/v1/destinations/prod/test"))
    fleet.sim.set_faults(force_status=None)
    keep(client.post("/v1/destinations/staging/test"))
    keep(client.post("/v1/events/batch", json={"events": [event(2, 2, "trigger")]}))
    for path in ("/v1/dead-letters", f"/v1/dead-letters/{rejected}", "/v1/dead-letters/counts",
                 "/v1/incidents/1/timeline", "/v1/maintenance-windows", "/v1/status",
                 "/openapi.json"):
        keep(client.get(path))
    keep(client.post("/v1/dead-letters/replay", json={"event_ids": [rejected]}))
    fleet.wait_final([rejected])
    # run-time destinations: keys given, sealed, used by a worker, changed, refused
    added, changed, refused, bare = (random_routing_key() for _ in range(4))
    keep(client.post("/v1/destinations", json={"name": "acme", "routing_key": added,
                                               "events_url": fleet.sim.events_url}))
    sent = keep(client.post("/v1/events", json=event(3, 3, "trigger", destination="acme")))
    assert fleet.wait_final([sent.json()["event_id"]]) == {sent.json()["event_id"]: "delivered"}
    keep(client.patch("/v1/destinations/acme", json={"routing_key": changed}))
    keep(client.post("/v1/destinations", json={"name": "acme2", "routing_key": refused,
                                               "region": "mars"}))
    keep(client.post("/v1/destinations", json=bare))
    keep(client.patch("/v1/destinations/acme", json={"routing_key": refused[:20]}))
    for path in ("/v1/destinations", "/v1/destinations/acme"):
        keep(client.get(path))
    keep(client.delete("/v1/destinations/acme"))
    keep(client.get("/v1/status", headers={"Authorization": f"Bearer {token}x"}))
    keep(httpx.get(api.url + "/metrics"))

    logs = "\n".join(record.getMessage() for record in caplog.records)
    stored = redis_text(redis_conn, prefix)
    assert len(answers) == 23 and len(caplog.records) > 10
    assert any("acme" in record.getMessage() for record in caplog.records)  # it was delivered
    for secret in (routing_key, STAGING_KEY, token, added, changed, refused, bare):
        for where, text in (("responses", "\n".join(answers)), ("logs", logs),
                            ("Redis", stored)):
            assert secret not in text, f"a secret in the {where}"
            assert secret[4:20] not in text, f"a piece of a secret in the {where}"
