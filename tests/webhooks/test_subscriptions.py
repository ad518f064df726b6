"""`webhooks subscribe|unsubscribe|subscriptions` against the simulator's REST API over
HTTPS, through PagerDuty's client; a running receiver accepts the new subscription's
webhooks without a restart, and stops accepting them once it is deleted."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from cli.main import main
from config.keyspace import Keyspace
from config.secrets import generate_key, parse_key_ring
from config.settings import Settings, load_settings
from simulator import DEMO_API_TOKEN, Simulator
from tests.conftest import FAST, random_routing_key, wait_until
from tests.webhooks.conftest import entries
from webhooks import WebhookService, signature_header
from webhooks.subscriptions import (
    ACTIVE,
    DELETED,
    TEMPORARILY_DISABLED,
    Subscriptions,
    SubscriptionSecrets,
    secret_context,
    status_of,
)
from worker import timeline

DEDUP = "monitao-monitor-77-incident-sub-1"
INCIDENT = "sub-1"


@pytest.fixture
def key_ring_text() -> str:
    return generate_key()


@pytest.fixture
def rest_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: Simulator,
             redis_url: str, prefix: str, key_ring_text: str) -> dict[str, str]:
    """A destinations file whose `prod` has REST credentials for the simulator's service,
    and the environment every command and the receiver read (no webhook secret)."""
    routing_key = random_routing_key()
    config = tmp_path / "destinations.toml"
    config.write_text(
        f'[destinations.prod]\nrouting_key_env = "PD_KEY_PROD"\n'
        f'events_url = "{sim.events_url}"\n'
        f'pagerduty_service_id = "PSIMSVC"\npagerduty_api_token_env = "PD_TOKEN_PROD"\n'
        f'pagerduty_from = "ops@example.com"\npagerduty_api_url = "{sim.rest_url}"\n'
        f'[destinations.plain]\nrouting_key_env = "PD_KEY_PROD"\n'
        f'events_url = "{sim.events_url}"\n', encoding="utf-8")
    env = {"MONITAO_PD_REDIS_URL": redis_url, "MONITAO_PD_KEY_PREFIX": prefix,
           "MONITAO_PD_CONFIG": str(config), "MONITAO_PD_SECRET_KEYS": key_ring_text,
           "MONITAO_PD_REST_CA_FILE": sim.ca_file, "PD_KEY_PROD": routing_key,
           "PD_TOKEN_PROD": DEMO_API_TOKEN}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def rest_settings(rest_env: dict[str, str]) -> Settings:
    return load_settings(**FAST)


@pytest.fixture
def live_receiver(rest_settings: Settings) -> Iterator[WebhookService]:
    with WebhookService(rest_settings, claim_idle_seconds=60, block_seconds=0.2) as service:
        yield service


def trigger(sim: Simulator, routing_key: str, dedup_key: str = DEDUP) -> None:
    answer = httpx.post(sim.events_url, json={
        "routing_key": routing_key, "event_action": "trigger", "dedup_key": dedup_key,
        "payload": {"summary": "disk full", "source": "db-1", "severity": "critical"}},
        timeout=10)
    assert answer.status_code == 202, answer.text


def with_timeline(redis_conn: redis.Redis, keys: Keyspace, incident_id: str = INCIDENT,
                  dedup_key: str = DEDUP) -> None:
    redis_conn.xadd(keys.timeline(incident_id), dict(zip(*[iter(timeline.entry(
        "delivered", "ev-1", "trigger", "prod", dedup_key))] * 2, strict=True)))


def everything_stored(redis_conn: redis.Redis, prefix: str) -> str:
    """Every key name and value under the prefix, as one text."""
    parts = []
    for key in redis_conn.scan_iter(match=f"{prefix}*", count=1000):
        parts.append(key)
        kind = redis_conn.type(key)
        if kind == "string":
            parts.append(str(redis_conn.get(key)))
        elif kind == "hash":
            parts.append(json.dumps(redis_conn.hgetall(key)))
        elif kind == "zset":
            parts.append(json.dumps(redis_conn.zrange(key, 0, -1, withscores=True)))
        elif kind == "set":
            parts.append(json.dumps(sorted(redis_conn.smembers(key))))
        elif kind == "list":
            parts.append(json.dumps(redis_conn.lrange(key, 0, -1)))
        elif kind == "stream":
            parts.append(json.dumps(redis_conn.xrange(key)))
    return "\n".join(parts)


def opened_secret(redis_conn: redis.Redis, keys: Keyspace, key_ring_text: str,
                  subscription_id: str) -> str:
    stored = redis_conn.hget(keys.webhook_subscription(subscription_id), "secret")
    return parse_key_ring(key_ring_text).open(stored, secret_context(subscription_id))


def test_subscribe_accept_list_unsubscribe(
        sim: Simulator, rest_env: dict[str, str], live_receiver: WebhookService,
        redis_conn: redis.Redis, prefix: str, key_ring_text: str,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys = Keyspace(prefix)
    assert not live_receiver.settings.webhook_secrets
    assert main(["webhooks", "subscribe", "--destination", "prod",
                 "--url", live_receiver.url]) == 0
    out = capsys.readouterr().out
    [made] = sim.webhook_subscriptions()
    assert made["filter"]["id"] == "PSIMSVC" and \
        made["delivery_method"]["url"] == live_receiver.url
    assert "incident.acknowledged" in made["events"]
    assert f"subscription {made['id']}" in out
    secret = opened_secret(redis_conn, keys, key_ring_text, made["id"])
    stored = redis_conn.hgetall(keys.webhook_subscription(made["id"]))
    assert stored["destination"] == "prod" and stored["service_id"] == "PSIMSVC"
    assert stored["url"] == live_receiver.url and stored["created_at"].isdigit()
    assert stored["secret"].startswith("v1:") and secret not in stored["secret"]
    assert redis_conn.zscore(keys.webhook_subscriptions, made["id"]) is not None
    assert int(redis_conn.get(keys.webhook_subscriptions_version)) == 1

    # the simulator's webhook, signed with the new secret, reaches the incident's timeline
    with_timeline(redis_conn, keys)
    trigger(sim, rest_env["PD_KEY_PROD"])
    assert sim.respond(DEDUP, "acknowledge", "Jane Responder") is not None
    [acknowledged] = wait_until(lambda: entries(redis_conn, keys, INCIDENT), 15,
                                message="the acknowledgement in the timeline")
    assert acknowledged["stage"] == "pagerduty_acknowledged"
    deliveries = {d["event_type"]: d["status"] for d in sim.webhook_deliveries()
                  if d["target"] == made["id"]}
    assert deliveries["incident.acknowledged"] == 202

    # subscribing the same URL again for the same destination is refused
    assert main(["webhooks", "subscribe", "--destination", "prod",
                 "--url", live_receiver.url]) == 2
    assert made["id"] in capsys.readouterr().err
    assert len(sim.webhook_subscriptions()) == 1

    assert main(["webhooks", "subscriptions"]) == 0
    listing = capsys.readouterr().out
    assert made["id"] in listing and "active" in listing and live_receiver.url in listing
    assert main(["webhooks", "subscriptions", "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record == {"id": made["id"], "destination": "prod", "service_id": "PSIMSVC",
                      "url": live_receiver.url, "description": stored["description"],
                      "created_at": record["created_at"], "status": ACTIVE}

    # unsubscribe: gone at the simulator and here; the receiver refuses the secret soon
    body = b'{"event": {"id": "E-after", "event_type": "pagey.ping"}}'

    def answer(webhook_id: str) -> int:
        return httpx.post(live_receiver.url, content=body, timeout=5, headers={
            "X-PagerDuty-Signature": signature_header([secret], body),
            "X-Webhook-Id": webhook_id}).status_code

    assert answer("before") == 202
    assert main(["webhooks", "unsubscribe", made["id"]]) == 0
    assert "at PagerDuty: deleted" in capsys.readouterr().out
    assert sim.webhook_subscriptions() == []
    assert not redis_conn.exists(keys.webhook_subscription(made["id"]))
    assert redis_conn.zcard(keys.webhook_subscriptions) == 0
    attempts = iter(range(1000))
    wait_until(lambda: answer(f"after-{next(attempts)}") == 401, 5,
               message="the receiver to refuse the deleted subscription's secret")
    assert main(["webhooks", "subscriptions"]) == 0
    assert "no webhook subscriptions" in capsys.readouterr().out

    # neither the token nor the secret anywhere
    stored_text = everything_stored(redis_conn, prefix)
    captured = capsys.readouterr()
    for value in (DEMO_API_TOKEN, secret):
        assert value not in stored_text
        assert value not in caplog.text
        assert value not in out + listing + captured.out + captured.err


def test_subscribe_refuses_without_a_key_ring_before_calling_pagerduty(
        sim: Simulator, rest_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MONITAO_PD_SECRET_KEYS")
    assert main(["webhooks", "subscribe", "--destination", "prod",
                 "--url", "https://hooks.example.com/webhooks/pagerduty"]) == 2
    err = capsys.readouterr().err
    assert "MONITAO_PD_SECRET_KEYS is not set" in err and "Traceback" not in err
    assert sim.rest_requests() == [] and sim.webhook_subscriptions() == []


def test_subscribe_names_what_is_wrong(sim: Simulator, rest_env: dict[str, str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    url = "https://hooks.example.com/webhooks/pagerduty"
    assert main(["webhooks", "subscribe", "--destination", "plain", "--url", url]) == 2
    assert "has no REST credentials" in capsys.readouterr().err
    assert main(["webhooks", "subscribe", "--destination", "nope", "--url", url]) == 2
    assert "no destination nope" in capsys.readouterr().err
    assert main(["webhooks", "subscribe", "--destination", "prod", "--url",
                 "ftp://x\x1b[2J"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b" in err
    sim.set_rest_faults(force_status=401)
    assert main(["webhooks", "subscribe", "--destination", "prod", "--url", url]) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and DEMO_API_TOKEN not in err
    assert sim.webhook_subscriptions() == []


def test_statuses_and_unsubscribing_one_gone_at_pagerduty(
        sim: Simulator, rest_settings: Settings, redis_conn: redis.Redis,
        capsys: pytest.CaptureFixture[str]) -> None:
    subscriptions = Subscriptions(redis_conn, rest_settings)
    first = subscriptions.subscribe("prod", "https://a.example.com/webhooks/pagerduty")
    second = subscriptions.subscribe("prod", "https://b.example.com/webhooks/pagerduty")
    # deleted behind our back (in PagerDuty's web UI)
    httpx.delete(f"{sim.rest_url}/webhook_subscriptions/{second.id}",
                 headers={"Authorization": f"Token token={DEMO_API_TOKEN}"},
                 verify=sim.client_ssl_context(), timeout=10).raise_for_status()
    statuses = {s.id: s.status for s in subscriptions.listing()}
    assert statuses == {first.id: ACTIVE, second.id: DELETED}
    sim.set_rest_faults(force_status=500)
    [status, _] = [s.status for s in subscriptions.listing()]
    assert status is not None and status.startswith("unknown: GET /webhook_subscriptions/")
    assert "HTTP 500" in status
    sim.set_rest_faults(force_status=None)
    assert subscriptions.unsubscribe(second.id).at_pagerduty == "already gone"
    assert [s.id for s in subscriptions.stored()] == [first.id]


def test_status_of_pagerduty_shapes() -> None:
    assert status_of(None) == DELETED
    assert status_of({"active": True, "delivery_method": {"temporarily_disabled": False}}) \
        == ACTIVE
    assert status_of({"active": True, "delivery_method": {"temporarily_disabled": True}}) \
        == TEMPORARILY_DISABLED
    assert status_of({"active": False, "delivery_method": {}}) == "inactive"


def test_secrets_are_reread_only_when_the_version_moves(
        redis_conn: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    keys = Keyspace(prefix)
    ring = parse_key_ring(generate_key())
    now = [100.0]
    held = SubscriptionSecrets(redis_conn, keys, ring, check_seconds=1.0,
                               recheck_seconds=0.1, clock=lambda: now[0])
    assert held.refresh() is False and held.current() == ()

    def store(subscription_id: str, sealed: str) -> None:
        redis_conn.hset(keys.webhook_subscription(subscription_id), "secret", sealed)
        redis_conn.zadd(keys.webhook_subscriptions, {subscription_id: 1})
        redis_conn.incr(keys.webhook_subscriptions_version)

    store("PSUB1", ring.seal("secret-one", secret_context("PSUB1")))
    assert not held.due() and held.refresh() is False  # within the second: not read
    now[0] += 0.2
    assert not held.due() and held.due(failed=True) and held.refresh(failed=True) is True
    assert held.current() == ("secret-one",)
    assert "secret-one" not in repr(held)
    # a sealed secret copied onto another id does not open: logged once, skipped
    caplog.set_level(logging.ERROR)
    store("PSUB2", redis_conn.hget(keys.webhook_subscription("PSUB1"), "secret"))
    now[0] += 1.0
    assert held.refresh() is False and held.current() == ("secret-one",)
    redis_conn.incr(keys.webhook_subscriptions_version)
    now[0] += 1.0
    held.refresh()
    lines = [r for r in caplog.records if "PSUB2" in r.getMessage()]
    assert len(lines) == 1 and "secret-one" not in caplog.text


def test_reencrypt_reseals_the_secrets_under_the_new_first_key(
        sim: Simulator, rest_env: dict[str, str], redis_conn: redis.Redis, prefix: str,
        key_ring_text: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    made = Subscriptions(redis_conn, load_settings()).subscribe(
        "prod", "https://a.example.com/webhooks/pagerduty")
    secret = opened_secret(redis_conn, Keyspace(prefix), key_ring_text, made.id)
    new_key = generate_key()
    monkeypatch.setenv("MONITAO_PD_SECRET_KEYS", f"{new_key},{key_ring_text}")
    assert main(["destinations", "reencrypt"]) == 0
    assert "re-encrypted 1 webhook subscription secret(s)" in capsys.readouterr().out
    assert opened_secret(redis_conn, Keyspace(prefix), new_key, made.id) == secret
    assert Subscriptions(redis_conn, load_settings()).reencrypt() == (0, {})


def test_the_receiver_starts_with_a_key_ring_and_no_webhook_secret(
        redis_url: str, prefix: str) -> None:
    from config.errors import ConfigurationError
    from webhooks.service import check_settings, describe_secrets

    with pytest.raises(ConfigurationError):
        check_settings(load_settings(redis_url=redis_url, key_prefix=prefix))
    settings = load_settings(redis_url=redis_url, key_prefix=prefix,
                             secret_keys=generate_key())
    check_settings(settings)
    assert "subscriptions made with `webhooks subscribe`" in describe_secrets(settings)
