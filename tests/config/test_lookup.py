"""The destination lookup against the real Redis: file first, the registry cached, every
change seen at once (pub/sub), a lost notification caught by the version poll, a reconnect
dropping everything, memory bounded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from config.destinations import parse_destinations
from config.keyspace import Keyspace
from config.lookup import OTHER_LABEL, DestinationLookup
from config.registry import Registry
from config.secrets import generate_key, parse_key_ring
from tests.conftest import random_routing_key, wait_until

URL = "http://127.0.0.1:9/v2/enqueue"


@pytest.fixture
def ring():
    return parse_key_ring(generate_key())


@pytest.fixture
def registry(redis_conn: redis.Redis, prefix: str, ring) -> Registry:
    return Registry(redis_conn, Keyspace(prefix), key_ring=ring)


@pytest.fixture
def make_lookup(redis_conn: redis.Redis, prefix: str, ring) -> Iterator:
    made: list[DestinationLookup] = []

    def make(**options) -> DestinationLookup:
        options.setdefault("key_ring", ring)
        lookup = DestinationLookup(redis_conn, Keyspace(prefix), **options)
        made.append(lookup)
        return lookup

    yield make
    for lookup in made:
        lookup.close()


class Loads:
    """Counts the lookup's reads of the registry (instrumentation, not a stand-in)."""

    def __init__(self, lookup: DestinationLookup) -> None:
        self.count, self._load = 0, lookup.registry.load
        lookup.registry.load = self  # type: ignore[method-assign]

    def __call__(self, name: str, **options):
        self.count += 1
        return self._load(name, **options)


def test_the_file_answers_first_then_the_registry_once(make_lookup, registry) -> None:
    key = random_routing_key()
    registry.add("acme", {"events_url": URL}, key)
    file = parse_destinations({"destinations": {"prod": {"routing_key": random_routing_key(),
                                                         "events_url": URL}}}, environ={})
    lookup = make_lookup(file_destinations=file, watch=True)
    lookup.get("nobody")  # starts the watcher; what it read before subscribing is dropped
    wait_until(lookup.subscribed.is_set, 10, message="the watcher to subscribe")
    loads = Loads(lookup)
    assert lookup.get("prod") is file["prod"] and loads.count == 0
    for _ in range(5):
        assert lookup.get("acme").secret() == key
    assert loads.count == 1
    assert lookup.get("nobody") is None and "nobody" not in lookup
    assert lookup.total() == 2 and lookup.describe_names() == "prod; 1 in the registry"


def test_a_change_reaches_a_watching_lookup_at_once(make_lookup, registry) -> None:
    registry.add("acme", {"events_url": URL, "rate_limit_per_minute": 10}, random_routing_key())
    lookup = make_lookup(watch=True)
    assert lookup.get("acme").rate_limit_per_minute == 10
    wait_until(lookup.subscribed.is_set, 10, message="the watcher to subscribe")
    lookup.get("acme")
    registry.update("acme", {"rate_limit_per_minute": 20})
    # the poll would take a second: pub/sub makes it much faster
    wait_until(lambda: lookup.get("acme").rate_limit_per_minute == 20, timeout=0.5,
               interval=0.01, message="the update through pub/sub")
    new_key = random_routing_key()
    registry.update("acme", {}, new_key)
    wait_until(lambda: lookup.get("acme").secret() == new_key, timeout=0.5, interval=0.01,
               message="the new routing key")
    registry.remove("acme")
    wait_until(lambda: lookup.get("acme") is None, timeout=0.5, interval=0.01,
               message="the removal")
    assert lookup.removed("acme")


def test_a_change_never_announced_is_caught_by_the_version_poll(
    make_lookup, registry, redis_conn, prefix: str
) -> None:
    keys = Keyspace(prefix)
    registry.add("acme", {"events_url": URL, "source": "before"}, random_routing_key())
    lookup = make_lookup(watch=True, poll_seconds=0.5)
    assert lookup.get("acme").source == "before"
    wait_until(lookup.subscribed.is_set, 10, message="the watcher to subscribe")
    lookup.get("acme")
    # a change whose notification is lost: written and counted, never published
    redis_conn.hset(keys.destination("acme"), "source", "after")
    redis_conn.incr(keys.registry_version)
    wait_until(lambda: lookup.get("acme").source == "after", timeout=2.0, interval=0.05,
               message="the version poll to drop the stale entry")


def test_a_reconnect_drops_every_cached_destination(make_lookup, registry, redis_conn,
                                                    prefix: str) -> None:
    keys = Keyspace(prefix)
    registry.add("acme", {"events_url": URL, "source": "before"}, random_routing_key())
    lookup = make_lookup(watch=True, poll_seconds=30)  # the poll cannot be what catches it
    lookup.get("acme")
    wait_until(lookup.subscribed.is_set, 10, message="the watcher to subscribe")
    lookup.get("acme")
    assert lookup.cached() == 1
    redis_conn.hset(keys.destination("acme"), "source", "after")  # unannounced
    # the server drops the subscriber's connection (only this one): redis-py reconnects
    # and subscribes again by itself, and whatever was published meanwhile is lost
    port = lookup._pubsub.connection._sock.getsockname()[1]
    [client_id] = [c["id"] for c in redis_conn.client_list()
                   if c["addr"].endswith(f":{port}") and c["addr"].startswith("127.0.0.1")]
    redis_conn.client_kill_filter(_id=client_id)
    wait_until(lambda: lookup.get("acme").source == "after", timeout=5, interval=0.05,
               message="the reconnect to drop the cache")
    wait_until(lookup.subscribed.is_set, 10, message="the watcher to subscribe again")


def test_the_cache_is_bounded_least_recently_used_first(make_lookup, registry) -> None:
    for n in range(6):
        registry.add(f"d{n}", {"events_url": URL}, random_routing_key())
    lookup = make_lookup(cache_size=3, watch=True)
    lookup.get("nobody")
    wait_until(lookup.subscribed.is_set, 10, message="the watcher to subscribe")
    loads = Loads(lookup)
    for n in range(6):
        lookup.get(f"d{n}")
    assert lookup.cached() == 3
    lookup.get("d5")
    assert loads.count == 6
    lookup.get("d0")
    assert loads.count == 7


def test_without_watching_an_entry_is_trusted_for_the_ttl_only(make_lookup, registry) -> None:
    registry.add("acme", {"events_url": URL, "source": "before"}, random_routing_key())
    lookup = make_lookup(ttl_seconds=0.2)
    assert lookup.get("acme").source == "before"
    registry.update("acme", {"source": "after"})
    wait_until(lambda: lookup.get("acme").source == "after", timeout=1, interval=0.05,
               message="the entry to expire")
    assert lookup._watcher is None


def test_a_new_destination_is_found_at_once(make_lookup, registry) -> None:
    lookup = make_lookup(ttl_seconds=60)
    assert lookup.get("fresh") is None
    registry.add("fresh", {"events_url": URL}, random_routing_key())
    assert lookup.get("fresh") is not None  # misses are never cached


def test_metric_labels_aggregate_past_the_limit(make_lookup, registry) -> None:
    registry.add("a1", {"events_url": URL, "account": "acme"}, random_routing_key())
    registry.add("b1", {"events_url": URL}, random_routing_key())
    lookup = make_lookup(metrics_max=2, poll_seconds=0.05)
    assert lookup.metrics_label("a1") == "a1" and lookup.metrics_label("b1") == "b1"
    registry.add("c1", {"events_url": URL}, random_routing_key())
    wait_until(lambda: lookup.total() == 3, timeout=2, message="the count")
    assert lookup.metrics_label("a1") == "account:acme"
    assert lookup.metrics_label("b1") == OTHER_LABEL
    assert lookup.metrics_label("@callback") == "@callback"


def test_without_a_key_ring_a_runtime_key_does_not_open(make_lookup, registry) -> None:
    from config.errors import UndecryptableError

    registry.add("acme", {"events_url": URL}, random_routing_key())
    lookup = make_lookup(key_ring=None)
    with pytest.raises(UndecryptableError, match="MONITAO_PD_SECRET_KEYS is not set"):
        lookup.get("acme").secret()


def test_preload_reads_many_destinations_in_one_go(make_lookup, registry) -> None:
    for n in range(5):
        registry.add(f"d{n}", {"events_url": URL}, random_routing_key())
    lookup = make_lookup(ttl_seconds=60)
    loads = Loads(lookup)
    lookup.preload([f"d{n}" for n in range(5)] + ["nobody"])
    assert [lookup.get(f"d{n}").name for n in range(5)] == [f"d{n}" for n in range(5)]
    assert loads.count == 0
    assert lookup.get("nobody") is None and loads.count == 1


def test_the_watcher_waits_instead_of_spinning(make_lookup) -> None:
    import time

    lookup = make_lookup(watch=True, poll_seconds=0.2)
    lookup.start()
    wait_until(lookup.subscribed.is_set, 10, message="the watcher to subscribe")
    time.sleep(0.5)  # past a few polls: the case that once made it spin
    pubsub, calls = lookup._pubsub, []
    real = pubsub.get_message

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    pubsub.get_message = counted
    time.sleep(1.5)
    # a wake-up per poll (0.2 s) or stop check (0.25 s), not thousands
    assert len(calls) < 30, len(calls)


def test_a_producer_takes_stored_settings_as_written(make_lookup, registry) -> None:
    registry.add("acme", {"events_url": URL, "severity_map": {"p1": "critical"}},
                 random_routing_key())
    lookup = make_lookup(validate=False, key_ring=None)
    lookup.preload(["acme"])
    destination = lookup.get("acme")
    assert destination.severity_map == {"p1": "critical"} and destination.origin == "registry"


def test_a_forked_child_watches_for_itself(make_lookup, registry) -> None:
    import contextlib
    import os
    import select
    import signal

    registry.add("acme", {"events_url": URL, "source": "before"}, random_routing_key())
    lookup = make_lookup(watch=True)
    assert lookup.get("acme").source == "before"
    wait_until(lookup.subscribed.is_set, 10, message="the watcher to subscribe")
    read, write = os.pipe()
    lookup._lock.acquire()  # held by a thread of the parent at the fork
    child = os.fork()
    if child == 0:  # the child: its own lock, its own watcher, fresh entries
        try:
            ok = lookup.get("acme") is not None and lookup._watcher_pid == os.getpid()
            registry.client.connection_pool.reset()
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    lookup._lock.release()
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 10)
        assert ready, "the child is stuck (on a lock held at the fork)"
        assert os.read(read, 1) == b"1"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(read)
