"""The destination registry against the real Redis: add, update, list, remove, reencrypt."""

from __future__ import annotations

import json
import time

import pytest
import redis

from config.destinations import parse_destinations
from config.errors import (
    ConfigurationError,
    ConflictError,
    InvalidDestinationError,
    InvalidInputError,
    NotFoundError,
)
from config.keyspace import Keyspace, endpoint_id, slot_of
from config.registry import Registry
from config.secrets import fingerprint, generate_key, parse_key_ring, stored_key_id
from tests.conftest import random_routing_key

URL = "http://127.0.0.1:9/v2/enqueue"


@pytest.fixture
def ring_text() -> str:
    return generate_key()


@pytest.fixture
def file_destinations():
    return parse_destinations({"destinations": {"prod": {"routing_key": random_routing_key(),
                                                         "events_url": URL}}}, environ={})


@pytest.fixture
def registry(redis_conn: redis.Redis, prefix: str, ring_text: str, file_destinations) -> Registry:
    return Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(ring_text),
                    file_destinations=file_destinations)


def our_keys(client: redis.Redis, prefix: str) -> dict[str, object]:
    """Every key under the prefix with its value, as text."""
    found = {}
    for key in client.scan_iter(match=f"{prefix}*"):
        kind = client.type(key)
        value = {"hash": client.hgetall, "zset": lambda k: client.zrange(k, 0, -1),
                 "string": client.get, "set": client.smembers,
                 "list": lambda k: client.lrange(k, 0, -1)}[kind](key)
        found[key] = value
    return found


def test_add_stores_the_key_sealed_and_describes_it(registry: Registry, redis_conn,
                                                    prefix: str) -> None:
    key = random_routing_key()
    record = registry.add("acme-prod", {"events_url": URL, "account": "acme",
                                        "severity_map": {"critical": "critical"}}, key)
    assert record.origin == "registry" and record.account == "acme"
    assert record.routing_key.length == 32
    assert record.routing_key.fingerprint == fingerprint(key)
    assert record.routing_key.key_id == registry.key_ring.primary_id
    assert record.version == 1 and record.created_at == record.updated_at
    assert key not in repr(our_keys(redis_conn, prefix))
    assert key not in record.model_dump_json()
    destination = registry.load("acme-prod")
    assert destination is not None and destination.secret() == key
    assert destination.severity_map == {"critical": "critical"}


def test_names_are_unique_across_the_file_and_the_registry(registry: Registry) -> None:
    registry.add("acme", {"events_url": URL}, random_routing_key())
    with pytest.raises(ConflictError) as exists:
        registry.add("acme", {"events_url": URL}, random_routing_key())
    assert exists.value.code == "exists"
    with pytest.raises(ConflictError) as in_file:
        registry.add("prod", {"events_url": URL}, random_routing_key())
    assert in_file.value.code == "exists" and "destinations file" in str(in_file.value)


@pytest.mark.parametrize("change", [
    lambda r: r.update("prod", {"source": "x"}),
    lambda r: r.remove("prod", confirm=True),
])
def test_file_destinations_are_read_only_here(registry: Registry, change) -> None:
    with pytest.raises(ConflictError) as caught:
        change(registry)
    assert caught.value.code == "read_only" and "destinations file" in str(caught.value)


def test_bad_input_names_each_field_and_value_and_stores_nothing(
    registry: Registry, redis_conn, prefix: str
) -> None:
    secret_ish = "k" * 31
    with pytest.raises(InvalidDestinationError) as caught:
        registry.add("bad name", {"region": "mars", "rate_limit_per_minute": 0,
                                  "events_url": "ftp://x", "severity_map": {"critical": "loud"},
                                  "account": "a b", "colour": "red"}, secret_ish)
    problems = caught.value.problems
    expected = ["name:", "routing_key:", "region:", "rate_limit_per_minute:", "events_url:",
                "severity_map.critical:", "account:", "colour: unknown setting"]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected), problems
    assert any("'bad name'" in p for p in problems) and any("'mars'" in p for p in problems)
    assert not any(secret_ish in p for p in problems)
    assert our_keys(redis_conn, prefix) == {}


def test_a_routing_key_is_required_and_a_key_ring_needed_to_store_it(
    redis_conn, prefix: str, registry: Registry
) -> None:
    with pytest.raises(InvalidDestinationError, match="routing_key: required"):
        registry.add("acme", {"events_url": URL}, None)
    ringless = Registry(redis_conn, Keyspace(prefix))
    with pytest.raises(ConfigurationError) as caught:
        ringless.add("acme", {"events_url": URL}, random_routing_key())
    assert "MONITAO_PD_SECRET_KEYS is not set" in caught.value.problems[0]
    assert our_keys(redis_conn, prefix) == {}


def test_update_changes_only_what_is_given(registry: Registry) -> None:
    key = random_routing_key()
    first = registry.add("acme", {"events_url": URL, "source": "MoniTao EU", "account": "acme",
                                  "severity_map": {"critical": "critical", "minor": "warning"}},
                         key)
    time.sleep(0.002)
    updated = registry.update("acme", {"rate_limit_per_minute": 50,
                                       "severity_map": {"minor": "info", "major": "error"}})
    assert updated.rate_limit_per_minute == 50 and updated.source == "MoniTao EU"
    assert updated.severity_map == {"critical": "critical", "minor": "info", "major": "error"}
    assert updated.routing_key.fingerprint == fingerprint(key)
    assert updated.version == 2 and updated.created_at == first.created_at
    assert updated.updated_at > first.updated_at
    cleared = registry.update("acme", {"events_url": None, "region": "eu", "account": None,
                                       "severity_map": {"minor": None}})
    assert cleared.events_url is None and cleared.url.startswith("https://events.eu.")
    assert cleared.account is None and "minor" not in cleared.severity_map
    new_key = random_routing_key()
    rekeyed = registry.update("acme", {}, new_key)
    assert rekeyed.routing_key.fingerprint == fingerprint(new_key)
    assert registry.load("acme").secret() == new_key


def test_update_refuses_bad_input_and_unknown_names(registry: Registry) -> None:
    registry.add("acme", {"events_url": URL}, random_routing_key())
    with pytest.raises(InvalidDestinationError) as caught:
        registry.update("acme", {"rate_limit_per_minute": -1, "severity_map": {"x": "loud"}})
    assert len(caught.value.problems) == 2
    assert registry.record("acme").version == 1
    with pytest.raises(NotFoundError):
        registry.update("nobody", {"source": "x"})


def test_every_change_bumps_the_version_and_publishes_the_name(
    registry: Registry, redis_conn, prefix: str
) -> None:
    keys = Keyspace(prefix)
    subscriber = redis_conn.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(keys.registry_channel)
    try:
        registry.add("acme", {"events_url": URL}, random_routing_key())
        registry.update("acme", {"source": "S"})
        registry.remove("acme")
        messages = []
        deadline = time.monotonic() + 5
        while len(messages) < 3 and time.monotonic() < deadline:
            message = subscriber.get_message(timeout=0.2)
            if message:
                messages.append(message["data"])
    finally:
        subscriber.close()
    assert messages == ["1 acme", "2 acme", "3 acme"]
    assert redis_conn.get(keys.registry_version) == "3"


def test_pages_list_file_and_registry_in_name_order_by_account(registry: Registry) -> None:
    for n in range(7):
        registry.add(f"d{n}", {"events_url": URL, "account": "even" if n % 2 == 0 else "odd"},
                     random_routing_key())
    names, after = [], ""
    while after is not None:
        page, after = registry.page(after=after, limit=3)
        assert len(page) <= 3
        names += [r.name for r in page]
    assert names == ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "prod"]
    assert [r.name for r in registry.records(account="odd")] == ["d1", "d3", "d5"]
    assert registry.count() == 7


def test_a_page_cut_at_a_record_that_no_longer_validates_goes_on(
    registry: Registry, redis_conn, prefix: str
) -> None:
    """A stored record that no longer validates is left out of its page, and the walk goes on
    past it (it used to end on a page that came short: `a4` was never listed)."""
    for name in ("a1", "a2", "a3", "a4"):
        registry.add(name, {"events_url": URL, "account": "x"}, random_routing_key())
    redis_conn.hset(Keyspace(prefix).destination("a2"), "region", "mars")
    walked, cursor = [], None
    while True:
        page = registry.listing(account="x", cursor=cursor, limit=2)
        walked.append([r.name for r in page.destinations])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert walked == [["a1"], ["a3", "a4"]]
    assert [r.name for r in registry.records()] == ["a1", "a3", "a4", "prod"]
    with pytest.raises(InvalidInputError, match="cursor: not a cursor"):
        registry.listing(cursor="a2")


def test_remove_with_pending_events_needs_confirmation_then_wakes_them(
    registry: Registry, redis_conn, prefix: str
) -> None:
    keys = Keyspace(prefix)
    registry.add("acme", {"events_url": URL}, random_routing_key())
    slot = slot_of("acme", "k1")
    later = int(time.time() * 1000) + 3_600_000
    redis_conn.rpush(keys.mailbox(slot), "e1", "e2")
    redis_conn.zadd(keys.schedule, {slot: later, slot_of("acme-other", "k"): later})
    redis_conn.set(keys.hold(slot), "1", px=3_600_000)
    for key in (keys.rate_window("acme"), keys.rate_waiting("acme")):
        redis_conn.zadd(key, {"x": 1})
    redis_conn.hset(keys.cooldown("acme"), "until", later)
    circuit = keys.circuit(endpoint_id(URL))
    redis_conn.hset(circuit, "failures", 3)

    with pytest.raises(ConflictError) as caught:
        registry.remove("acme")
    assert caught.value.code == "pending_events" and caught.value.pending == 2
    assert registry.load("acme") is not None

    removal = registry.remove("acme", confirm=True)
    assert (removal.pending_events, removal.woken_keys) == (2, 1)
    assert registry.load("acme") is None and registry.removed("acme")
    assert redis_conn.zscore(keys.schedule, slot) <= time.time() * 1000 + 1000
    assert redis_conn.zscore(keys.schedule, slot_of("acme-other", "k")) == later
    assert not redis_conn.exists(keys.hold(slot), keys.rate_window("acme"),
                                 keys.rate_waiting("acme"), keys.cooldown("acme"))
    # the file's destination posts to the same endpoint: its circuit stays
    assert not removal.circuit_deleted and redis_conn.exists(circuit)
    assert redis_conn.lrange(keys.mailbox(slot), 0, -1) == ["e1", "e2"]  # for the workers
    with pytest.raises(NotFoundError):
        registry.remove("acme")

    registry.add("acme", {"events_url": URL}, random_routing_key())
    assert not registry.removed("acme")


def test_removing_a_destination_removes_its_maintenance_windows(
    registry: Registry, redis_conn, prefix: str
) -> None:
    from config.maintenance import MaintenanceWindow
    from worker.maintenance import add_window, runtime_windows

    keys = Keyspace(prefix)
    registry.add("acme", {"events_url": URL}, random_routing_key())
    for window_id, destination in (("w-acme", "acme"), ("w-prod", "prod")):
        add_window(redis_conn, keys, MaintenanceWindow(
            id=window_id, destination=destination, weekly="sun 02:00-04:00", mode="hold"))
    assert registry.remove("acme").windows_removed == ["w-acme"]
    assert [w.id for w in runtime_windows(redis_conn, keys)] == ["w-prod"]


def test_removing_the_last_user_of_an_endpoint_deletes_its_circuit(
    registry: Registry, redis_conn, prefix: str
) -> None:
    keys = Keyspace(prefix)
    own = "http://127.0.0.1:9/own/v2/enqueue"
    registry.add("a", {"events_url": own}, random_routing_key())
    registry.add("b", {"events_url": own}, random_routing_key())
    circuit = keys.circuit(endpoint_id(own))
    redis_conn.hset(circuit, "failures", 3)
    assert not registry.remove("a").circuit_deleted and redis_conn.exists(circuit)
    assert registry.remove("b").circuit_deleted and not redis_conn.exists(circuit)
    assert redis_conn.hgetall(keys.registry_endpoints) == {}


def test_reencrypt_reseals_every_key_under_the_first_key(
    registry: Registry, redis_conn, prefix: str, ring_text: str
) -> None:
    plain = {f"d{n}": random_routing_key() for n in range(5)}
    for name, key in plain.items():
        registry.add(name, {"events_url": URL}, key)
    old_id = registry.key_ring.primary_id
    new = generate_key()
    rotated = Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(f"{new},{ring_text}"))
    assert rotated.key_usage().by_key_id == {old_id: 5}
    report = rotated.reencrypt()
    assert (report.total, report.resealed, report.already, report.failed) == (5, 5, 0, {})
    assert rotated.key_usage().by_key_id == {rotated.key_ring.primary_id: 5}
    only_new = Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(new))
    assert only_new.undecryptable() == {}
    for name, key in plain.items():
        assert only_new.load(name).secret() == key
        assert stored_key_id(redis_conn.hget(Keyspace(prefix).destination(name),
                                             "routing_key")) == only_new.key_ring.primary_id
    assert rotated.reencrypt().already == 5


def test_a_wrong_ring_is_reported_per_destination(registry: Registry, redis_conn,
                                                  prefix: str) -> None:
    registry.add("acme", {"events_url": URL}, random_routing_key())
    wrong = Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(generate_key()))
    found = wrong.undecryptable()
    assert list(found) == ["acme"] and "not in MONITAO_PD_SECRET_KEYS" in found["acme"]
    usage = wrong.key_usage()
    assert usage.missing == {registry.key_ring.primary_id: 1}
    report = wrong.reencrypt()
    assert report.resealed == 0 and list(report.failed) == ["acme"]


def test_records_are_json_without_the_key(registry: Registry) -> None:
    key = random_routing_key()
    registry.add("acme", {"events_url": URL}, key)
    payload = json.loads(registry.record("acme").model_dump_json())
    assert payload["routing_key"]["origin"] == "registry"
    assert key not in json.dumps(payload)
    assert registry.record("prod").origin == "file"


def test_check_finds_names_the_file_took_later_and_keys_that_do_not_open(
    registry: Registry, redis_conn, prefix: str
) -> None:
    before_the_file = Registry(redis_conn, Keyspace(prefix), key_ring=registry.key_ring)
    before_the_file.add("prod", {"events_url": URL}, random_routing_key())
    registry.add("acme", {"events_url": URL}, random_routing_key())
    found = registry.check()
    assert found.clashes == ["prod"] and found.undecryptable == {} and not found.ok
    assert found.usage.destinations == 2
    wrong = Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(generate_key()))
    assert sorted(wrong.check().undecryptable) == ["acme", "prod"]
