"""REST credentials of a destination (PagerDuty's REST API): in the file and in the
registry, the API token sealed like a routing key and only ever described."""

from __future__ import annotations

import time

import pytest
import redis

from config.destinations import parse_destinations
from config.errors import ConfigurationError, InvalidDestinationError
from config.keyspace import Keyspace
from config.pagerduty_rest import RestCredentials
from config.registry import Registry
from config.secrets import fingerprint, generate_key, parse_key_ring
from tests.config.test_registry import our_keys
from tests.conftest import random_routing_key

URL = "http://127.0.0.1:9/v2/enqueue"
TOKEN = "u+Zx-RESTtoken-4242abcd"


@pytest.fixture
def registry(redis_conn: redis.Redis, prefix: str) -> Registry:
    return Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(generate_key()))


def test_file_destination_takes_rest_credentials_from_a_variable() -> None:
    found = parse_destinations({"destinations": {"prod": {
        "routing_key": random_routing_key(), "pagerduty_service_id": "PSVC123",
        "pagerduty_api_token_env": "PD_API", "pagerduty_from": "ops@example.com",
        "region": "eu"}}}, environ={"PD_API": TOKEN})
    prod = found["prod"]
    assert prod.has_rest and prod.api_url == "https://api.eu.pagerduty.com"
    assert prod.api_token() == TOKEN and TOKEN not in repr(prod)
    credentials = RestCredentials.of(prod)
    assert credentials is not None and credentials.service_id == "PSVC123"
    assert TOKEN not in repr(credentials)


@pytest.mark.parametrize(("table", "expected"), [
    ({"pagerduty_service_id": "PSVC123"}, "go together"),
    ({"pagerduty_api_token_env": "PD_API"}, "go together"),
    ({"pagerduty_service_id": "PSVC123", "pagerduty_api_token_env": "NOPE"}, "$NOPE is not set"),
    ({"pagerduty_service_id": "bad id!", "pagerduty_api_token_env": "PD_API"}, "service id"),
    ({"pagerduty_service_id": "PSVC123", "pagerduty_api_token_env": "PD_API",
      "pagerduty_api_url": "http://api.example"}, "https://"),
    ({"pagerduty_service_id": "PSVC123", "pagerduty_api_token_env": "PD_API",
      "pagerduty_from": "not an email"}, "email"),
])
def test_file_refuses_incomplete_or_bad_rest_credentials(table, expected: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_destinations({"destinations": {"prod": {"routing_key": random_routing_key(),
                                                      **table}}}, environ={"PD_API": TOKEN})
    assert expected in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_registry_seals_the_api_token_and_only_describes_it(registry: Registry, redis_conn,
                                                            prefix: str) -> None:
    record = registry.add("acme", {"events_url": URL, "pagerduty_service_id": "PSVC123",
                                   "pagerduty_from": "ops@example.com"},
                          random_routing_key(), api_token=TOKEN)
    assert record.pagerduty_api_token is not None
    assert record.pagerduty_api_token.fingerprint == fingerprint(TOKEN)
    assert record.pagerduty_api_url == "https://api.pagerduty.com"
    assert TOKEN not in record.model_dump_json()
    assert TOKEN not in repr(our_keys(redis_conn, prefix))
    loaded = registry.load("acme")
    assert loaded is not None and loaded.api_token() == TOKEN
    assert registry.for_service("PSVC123") == ["acme"]
    # a ciphertext of the token does not open as the routing key, nor the other way
    stored = redis_conn.hgetall(Keyspace(prefix).destination("acme"))
    assert stored["api_token"] != stored["routing_key"]


def test_registry_wants_a_service_id_and_a_token_together(registry: Registry) -> None:
    with pytest.raises(InvalidDestinationError, match="pagerduty_service_id"):
        registry.add("acme", {"events_url": URL, "pagerduty_service_id": "PSVC123"},
                     random_routing_key())
    with pytest.raises(InvalidDestinationError, match="pagerduty_service_id"):
        registry.add("acme", {"events_url": URL}, random_routing_key(), api_token=TOKEN)
    with pytest.raises(InvalidDestinationError) as caught:
        registry.add("acme", {"events_url": URL, "pagerduty_service_id": "PSVC123"},
                     random_routing_key(), api_token="short")
    assert "pagerduty_api_token" in str(caught.value) and "short" not in str(caught.value)


def test_update_keeps_changes_and_clears_rest_credentials(registry: Registry, redis_conn,
                                                          prefix: str) -> None:
    registry.add("acme", {"events_url": URL}, random_routing_key())
    record = registry.update("acme", {"pagerduty_service_id": "PSVC123"}, api_token=TOKEN)
    assert record.pagerduty_service_id == "PSVC123" and record.pagerduty_api_token
    record = registry.update("acme", {"pagerduty_from": "ops@example.com"})
    assert record.pagerduty_api_token is not None  # kept
    loaded = registry.load("acme")
    assert loaded is not None and loaded.api_token() == TOKEN
    record = registry.update("acme", {"pagerduty_service_id": None})
    assert record.pagerduty_api_token is None and record.pagerduty_service_id is None
    stored = redis_conn.hgetall(Keyspace(prefix).destination("acme"))
    assert "api_token" not in stored
    assert registry.for_service("PSVC123") == []


def test_reencrypt_reseals_the_api_token_too(redis_conn, prefix: str) -> None:
    old, new = generate_key(), generate_key()
    first = Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(old))
    first.add("acme", {"events_url": URL, "pagerduty_service_id": "PSVC123"},
              random_routing_key(), api_token=TOKEN)
    rotated = Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(f"{new},{old}"))
    assert rotated.reencrypt().resealed == 1
    only_new = Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(new))
    loaded = only_new.load("acme")
    assert loaded is not None and loaded.api_token() == TOKEN
    assert only_new.undecryptable() == {}


def test_with_rest_lists_file_and_run_time_destinations_with_credentials(
        redis_conn, prefix: str) -> None:
    file = parse_destinations({"destinations": {
        "plain": {"routing_key": random_routing_key()},
        "ops": {"routing_key": random_routing_key(), "pagerduty_service_id": "PFILE1",
                "pagerduty_api_token": TOKEN}}}, environ={})
    registry = Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(generate_key()),
                        file_destinations=file)
    registry.add("acme", {"events_url": URL, "pagerduty_service_id": "PSVC123"},
                 random_routing_key(), api_token=TOKEN)
    registry.add("other", {"events_url": URL}, random_routing_key())
    assert [d.name for d in registry.with_rest()] == ["ops", "acme"]
    registry.update("acme", {"pagerduty_service_id": None})
    assert [d.name for d in registry.with_rest()] == ["ops"]
    registry.update("other", {"pagerduty_service_id": "PSVC9"}, api_token=TOKEN)
    registry.remove("other")
    assert [d.name for d in registry.with_rest()] == ["ops"]
    assert registry.for_service("PSVC9") == []


def test_status_keeps_what_a_process_that_can_open_the_token_found(redis_conn,
                                                                  prefix: str) -> None:
    from config.rest_checks import RestCheck, RestChecks

    table = {"destinations": {"ops": {"routing_key": random_routing_key(),
                                      "pagerduty_service_id": "PFILE1",
                                      "pagerduty_api_token_env": "PD_API"}}}
    unresolved = parse_destinations(table, environ={}, resolve_secrets=False)["ops"]
    checks = RestChecks(redis_conn, Keyspace(prefix))
    registry = Registry(redis_conn, Keyspace(prefix), file_destinations={"ops": unresolved})
    [shown] = checks.refreshed(registry)  # no token here: nothing is asked, or kept
    assert shown.problem is not None and shown.problem.startswith("not checked here: ")
    assert checks.read(["ops"]) == {}
    found = RestCheck("ops", "PFILE1", None, checked_at=time.time())
    checks.record([found])  # what a process with the token found
    assert checks.refreshed(registry) == [found]
