"""Every script answers a resend of the same call as its first run did (issue 16, case 7).

redis-py sends a command again when the connection drops before the reply arrived, though
Redis may have run it already. Here a client sends every EVALSHA twice and keeps the second
reply, which is what the caller then sees; the first run's effects must not be doubled and
the answer must be the first one. One test also loses a real reply, through a TCP proxy in
front of Redis, and lets redis-py's own retry resend the producer's pipeline.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from config import defaults
from config.keyspace import Keyspace, slot_of
from config.settings import Settings
from producer import AlertProducer
from worker import timeline
from worker.app import create_app
from worker.broker import publish_deliveries
from worker.context import FleetContext
from worker.delivery import deliver_slot, endpoint_id
from worker.dispatcher import Dispatcher
from worker.replay import Replayer


class TwiceRedis(redis.Redis):
    """Runs every script call twice and answers with the second reply; keeps both."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replies: list[tuple[Any, Any]] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] != "EVALSHA":
            return super().execute_command(*args, **options)
        first = super().execute_command(*args, **options)
        second = super().execute_command(*args, **options)
        self.replies.append((first, second))
        return second


def twice(client: redis.Redis) -> TwiceRedis:
    return TwiceRedis(connection_pool=client.connection_pool)


@pytest.fixture
def resending_ctx(settings: Settings, destinations: Any) -> Iterator[FleetContext]:
    """A worker context whose script calls all reach Redis twice."""
    context = FleetContext(settings, destinations)
    clients: list[TwiceRedis] = []

    def thread_client(client: redis.Redis) -> TwiceRedis:
        clients.append(twice(client))
        return clients[-1]

    context.thread_client = thread_client  # type: ignore[method-assign]
    context.resent = clients  # type: ignore[attr-defined]
    yield context
    context.close()


def incident(producer: AlertProducer, name: str, *actions: str) -> list[str]:
    return producer.send_many([
        {"action": action, "monitor_id": "9", "incident_id": name, "summary": "[DOWN] x"}
        for action in actions])


# What the first run of a script wrote on the event itself: a resent ACQUIRE or TAKE_HEAD
# shows the same head (read at another `now`), with these fields its first run (and the
# gate in it) added.
BOOKKEEPING = {"sent", "in_flight", "gate_by", "gate_reply"}


def answer(reply: Any) -> Any:
    """A script's answer, with a head event's own bookkeeping fields left out."""
    if isinstance(reply, list) and len(reply) > 3 and reply[0] == 1 and len(reply) % 2 == 1:
        fields = dict(zip(reply[3::2], reply[4::2], strict=True))
        return reply[0], reply[2], {k: v for k, v in fields.items() if k not in BOOKKEEPING}
    return reply


def assert_same_answers(client: TwiceRedis) -> None:
    for first, second in client.replies:
        assert answer(first) == answer(second)


def test_a_whole_pass_sent_twice_acts_once(resending_ctx: FleetContext, settings: Settings,
                                          destinations: Any, sim: Any, redis_conn: Any) -> None:
    ctx = resending_ctx
    producer = AlertProducer(settings, destinations=destinations, redis=redis_conn)
    name = f"twice-{uuid.uuid4().hex[:6]}"
    trigger, resolve = incident(producer, name, "trigger", "resolve")

    report = deliver_slot(ctx, "prod", f"monitao-monitor-9-incident-{name}")

    assert (report.ended, report.finished) == ("empty", 2)
    assert [e["event_action"] for e in sim.received()] == ["trigger", "resolve"]
    stages = [e["stage"] for e in timeline.read(redis_conn, ctx.keys, name)]
    assert stages == ["enqueued", "enqueued", "attempt", "delivered", "attempt", "delivered"]
    keys = ctx.keys
    assert redis_conn.zcard(keys.rate_window("prod")) == 2  # one place per request
    [client] = ctx.resent  # type: ignore[attr-defined]
    assert len(client.replies) >= 3  # acquire (with its gate), finish, take_head, gate, finish
    assert_same_answers(client)
    assert {redis_conn.hget(keys.event(i), "state") for i in (trigger, resolve)} == {"delivered"}


def test_a_probe_sent_twice_is_one_probe(resending_ctx: FleetContext, settings: Settings,
                                         destinations: Any, sim: Any, redis_conn: Any) -> None:
    ctx, keys = resending_ctx, resending_ctx.keys
    endpoint = endpoint_id(destinations["prod"].url)
    # the endpoint's circuit is open and its interval over: the next request is its probe
    redis_conn.hset(keys.circuit(endpoint), mapping={
        "failures": settings.circuit_threshold, "open_until": 0, "interval": 1000})
    producer = AlertProducer(settings, destinations=destinations, redis=redis_conn)
    name = f"probe-{uuid.uuid4().hex[:6]}"
    [trigger] = incident(producer, name, "trigger")

    deliver_slot(ctx, "prod", f"monitao-monitor-9-incident-{name}")

    assert redis_conn.hget(keys.event(trigger), "state") == "delivered"
    assert not redis_conn.exists(keys.circuit_probe(endpoint))  # not held by nobody for 30 s
    assert not redis_conn.exists(keys.circuit(endpoint))  # the probe's success closed it
    assert len(sim.received()) == 1


def test_claims_and_takes_sent_twice_lose_nothing(resending_ctx: FleetContext,
                                                  settings: Settings, redis_conn: Any) -> None:
    ctx, keys = resending_ctx, resending_ctx.keys
    redis_conn.zadd(keys.schedule, {"prod/a": 1, "prod/b": 2})
    app = create_app(settings, {})

    published: list[tuple[str, str]] = []
    dispatcher = Dispatcher(ctx, app)
    import worker.dispatcher as dispatching

    original = dispatching.publish_deliveries
    dispatching.publish_deliveries = lambda app, slots: published.extend(slots)  # type: ignore
    try:
        assert dispatcher.tick() == 2
    finally:
        dispatching.publish_deliveries = original
    assert published == [("prod", "a"), ("prod", "b")]  # the first run's claim, not nothing

    publish_deliveries(app, [("prod", "k1"), ("prod", "k2")])
    broker = twice(ctx.broker_redis)
    ctx.thread_client = lambda client: broker  # type: ignore[method-assign]
    taken = [ctx.follow_ons.take() for _ in range(3)]
    assert [t and t.dedup_key for t in taken] == ["k1", "k2", None]  # k1 not lost to a resend
    assert redis_conn.llen(keys.queue(defaults.QUEUE_NAME)) == 0
    assert_same_answers(broker)


def test_operator_scripts_sent_twice_answer_as_they_did(settings: Settings, destinations: Any,
                                                        sim: Any, redis_conn: Any) -> None:
    from worker import dead_letters

    client = twice(redis_conn)
    producer = AlertProducer(settings, destinations=destinations, redis=redis_conn)
    name = f"ops-{uuid.uuid4().hex[:6]}"
    sim.set_faults(force_status=400)
    first, second = incident(producer, name, "trigger", "trigger")
    ctx = FleetContext(settings, destinations)
    try:
        deliver_slot(ctx, "prod", f"monitao-monitor-9-incident-{name}")
    finally:
        ctx.close()
    assert {redis_conn.hget(ctx.keys.event(i), "state") for i in (first, second)} == {
        "dead_lettered"}

    [decision] = Replayer(client, settings, operator="test").replay([first])
    assert decision.outcome == "queued"  # not "already pending": that was its own doing
    entry = timeline.entry("purged", second, "trigger", "prod", "k", operator="test")
    assert dead_letters.retire(client, ctx.keys, settings, second, "purged", entry,
                               name) == "purged"
    assert_same_answers(client)
    stages = [e["stage"] for e in timeline.read(redis_conn, ctx.keys, name)]
    assert stages.count("replayed") == 1 and stages.count("purged") == 1


class LosingProxy:
    """A TCP proxy to Redis that, once armed, relays a command containing `marker` to
    Redis, waits for Redis's reply, and closes the client's connection instead of passing
    the reply on: the reply is lost after Redis ran the command."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream, self.marker, self.lost = upstream, b"", 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, marker: bytes) -> None:
        self.marker = marker

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                if self.marker and self.marker in data:
                    self.marker = b""
                    server.sendall(data)
                    server.shutdown(socket.SHUT_WR)  # Redis answers what it got, then ends
                    self.lost += 1
                    client.close()
                    return
                server.sendall(data)
        except OSError:
            pass
        finally:
            server.close()
            client.close()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def test_a_lost_enqueue_reply_still_publishes_the_task(settings: Settings, destinations: Any,
                                                       redis_url: str) -> None:
    host, port, db = "127.0.0.1", 6379, 9
    if not redis_url.startswith("redis://127.0.0.1:6379/"):
        pytest.skip("the proxy stands in front of the local Redis only")
    proxy = LosingProxy((host, port))
    client = redis.Redis(host=host, port=proxy.port, db=db, decode_responses=True)
    producer = AlertProducer(settings, destinations=destinations, redis=client)
    try:
        name = f"lost-{uuid.uuid4().hex[:6]}"
        event_id = uuid.uuid4().hex
        proxy.arm(event_id.encode())
        producer.send({"event_id": event_id, "action": "trigger", "monitor_id": "9",
                       "incident_id": name, "summary": "[DOWN] x"})
        assert proxy.lost == 1  # Redis ran the enqueue, its reply never came back
        # redis-py sent the pipeline again: the task is published now, not when a
        # dispatcher's claim of the key ends (60 s by default)
        queue = producer.keys.queue(defaults.QUEUE_NAME)
        messages = [json.loads(m) for m in client.lrange(queue, 0, -1)]
        assert len(messages) == 1
        assert client.llen(producer.keys.mailbox(slot_of(
            "prod", f"monitao-monitor-9-incident-{name}"))) == 1
    finally:
        client.close()
        proxy.close()


def test_webhook_scripts_sent_twice_answer_as_they_did(settings: Settings,
                                                       redis_conn: Any) -> None:
    from config.idempotent import IdempotentScript
    from webhooks.processor import RECORD_MATCHED
    from webhooks.receiver import ADMIT

    client, keys = twice(redis_conn), Keyspace(settings.key_prefix)
    admit = IdempotentScript(client, ADMIT, keys)
    queued = admit(keys=[keys.webhook_seen("d1"), keys.webhook_inbox,
                         keys.webhook_event_seen("e1")], args=[60_000, "{}", "d1"])
    assert queued == 1  # "queued", not "seen before": that was its own first run
    assert redis_conn.xlen(keys.webhook_inbox) == 1

    redis_conn.xgroup_create(keys.webhook_inbox, "g", id="0")
    [(_, [(entry_id, _)])] = redis_conn.xreadgroup("g", "c", {keys.webhook_inbox: ">"})
    record = IdempotentScript(client, RECORD_MATCHED, keys)
    entry = json.dumps(["stage", "pagerduty_acknowledged", "event_id", "E1"])
    record(keys=[keys.timeline("w"), keys.webhook_inbox, ""],
           args=["g", entry_id, 60_000, entry, "k", 60_000])
    assert redis_conn.xlen(keys.timeline("w")) == 1  # one entry, not two
    assert_same_answers(client)


def test_a_maintenance_change_sent_twice_answers_as_it_did(settings: Settings,
                                                          redis_conn: Any) -> None:
    from datetime import UTC, datetime, timedelta

    from config.maintenance import MaintenanceWindow
    from worker.maintenance import add_window, remove_window

    client, keys = twice(redis_conn), Keyspace(settings.key_prefix)
    now = datetime.now(UTC)
    add_window(client, keys, MaintenanceWindow(
        id="w1", destination="prod", start=now, end=now + timedelta(hours=1), mode="hold"))
    redis_conn.sadd(keys.maintenance_held("w1"), "prod/a")
    redis_conn.zadd(keys.schedule, {"prod/a": 10**13})
    assert remove_window(client, keys, "w1") == 1  # not None ("no such window") nor 0 woken
    assert_same_answers(client)


def test_registry_and_token_changes_sent_twice_answer_as_they_did(settings: Settings,
                                                                   redis_conn: Any) -> None:
    from config import tokens
    from config.registry import Registry
    from config.secrets import generate_key, parse_key_ring
    from tests.conftest import random_routing_key

    client, keys = twice(redis_conn), Keyspace(settings.key_prefix)
    registry = Registry(client, keys, key_ring=parse_key_ring(generate_key()))
    # each would answer "exists" / "no such destination" / "no such token" to its own resend
    record = registry.add("acme", {"events_url": "http://127.0.0.1:9/v2/enqueue"},
                          random_routing_key())
    assert record.name == "acme"
    registry.remove("acme")
    token, _ = tokens.create(client, keys, "app", ["events:write"])
    assert tokens.find(redis_conn, keys, token) is not None
    tokens.revoke(client, keys, "app")
    assert tokens.find(redis_conn, keys, token) is None
    assert_same_answers(client)
