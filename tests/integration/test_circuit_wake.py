"""A closing circuit wakes the slots that waited on it in bounded batches: one in the
probe's own finish script, the rest by the dispatchers. Real Redis, a real delivery pass
to the simulator closes the circuit, the real wake script and dispatcher thread wake the
rest."""

from __future__ import annotations

import time

import pytest
import redis

from config.keyspace import Keyspace, slot_of
from config.settings import Settings
from producer import AlertProducer
from tests.conftest import wait_until
from worker.admission import CIRCUIT_WAKE_BATCH
from worker.app import create_app
from worker.circuit_wake import wake_waiters
from worker.context import FleetContext
from worker.delivery import deliver_slot, endpoint_id
from worker.dispatcher import Dispatcher

WAITING = 5_000
DEDUP = "monitao-monitor-1-incident-probe"


def redis_now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


class OpenCircuit:
    """prod's endpoint with its circuit open, its interval over, and WAITING slots waiting
    on it, each due in ten minutes and holding a back-off."""

    def __init__(self, client: redis.Redis, keys: Keyspace, endpoint: str,
                 threshold: int) -> None:
        self.client, self.keys, self.endpoint = client, keys, endpoint
        self.slots = [slot_of("prod", f"waiting-{n}") for n in range(WAITING)]
        self.far = redis_now_ms(client) + 600_000
        pipe = client.pipeline(transaction=False)
        pipe.sadd(keys.circuit_waiting(endpoint), *self.slots)
        pipe.zadd(keys.schedule, dict.fromkeys(self.slots, self.far))
        for slot in self.slots:
            pipe.set(keys.hold(slot), "1", px=600_000)
        pipe.hset(keys.circuit(endpoint), mapping={
            "failures": threshold, "open_until": redis_now_ms(client) - 1, "interval": 1000})
        pipe.execute()

    def woken(self) -> int:
        """How many of the slots are no longer due in ten minutes."""
        return int(self.client.zcount(self.keys.schedule, "-inf", f"({self.far}"))

    def holding(self) -> int:
        """How many of the slots still hold a back-off."""
        return int(self.client.exists(*(self.keys.hold(slot) for slot in self.slots)))


@pytest.fixture
def circuit(ctx: FleetContext, redis_conn: redis.Redis, settings: Settings) -> OpenCircuit:
    endpoint = endpoint_id(ctx.destinations["prod"].url)
    return OpenCircuit(redis_conn, ctx.keys, endpoint, settings.circuit_threshold)


def probe(ctx: FleetContext, settings: Settings, redis_conn: redis.Redis) -> None:
    """Deliver one trigger of prod in this thread: it is the circuit's probe and closes it."""
    producer = AlertProducer(settings, destinations=ctx.destinations, redis=redis_conn)
    [event_id] = producer.send_many([{"action": "trigger", "monitor_id": "1",
                                      "incident_id": "probe", "summary": "[DOWN]"}])
    deliver_slot(ctx, "prod", DEDUP)
    assert redis_conn.hget(ctx.keys.event(event_id), "state") == "delivered"
    events = [fields["event"] for _, fields in redis_conn.xrange(ctx.keys.circuit_log)]
    assert events[-1:] == ["closed"]


def test_a_close_wakes_one_batch_and_the_dispatcher_the_rest_a_batch_per_script(
    ctx: FleetContext, settings: Settings, redis_conn: redis.Redis, circuit: OpenCircuit
) -> None:
    keys = ctx.keys
    probe(ctx, settings, redis_conn)

    # the probe's finish script woke one batch, no more (the probe's own slot, which joined
    # the waiting set as it asked the gate, may be one of them)
    waiting = keys.circuit_waiting(circuit.endpoint)
    left = redis_conn.scard(waiting)
    assert left == WAITING + 1 - CIRCUIT_WAKE_BATCH
    assert CIRCUIT_WAKE_BATCH - 1 <= circuit.woken() <= CIRCUIT_WAKE_BATCH
    assert circuit.woken() + circuit.holding() == WAITING  # woken: due now, hold ended
    assert redis_conn.smembers(keys.circuit_waking) == {circuit.endpoint}
    assert redis_conn.ttl(waiting) > 0

    # each of the dispatchers' wake steps runs one script per endpoint: one batch at most
    steps: list[int] = []
    while woken := wake_waiters(redis_conn, keys, settings.circuit_threshold):
        steps.append(woken)
        assert woken <= CIRCUIT_WAKE_BATCH
        assert left - redis_conn.scard(waiting) == woken
        left = redis_conn.scard(waiting)
        assert circuit.woken() + circuit.holding() == WAITING
    assert len(steps) == -(-(WAITING + 1 - CIRCUIT_WAKE_BATCH) // CIRCUIT_WAKE_BATCH)
    assert (circuit.woken(), circuit.holding()) == (WAITING, 0)
    assert not redis_conn.exists(waiting, keys.circuit_waking)


def test_the_dispatcher_thread_wakes_every_waiter_within_seconds(
    ctx: FleetContext, settings: Settings, redis_conn: redis.Redis, circuit: OpenCircuit
) -> None:
    dispatcher = Dispatcher(ctx, create_app(settings, ctx.destinations.file))
    dispatcher.start()
    try:
        probe(ctx, settings, redis_conn)
        closed = time.monotonic()
        wait_until(lambda: circuit.holding() == 0 and circuit.woken() == WAITING, timeout=20,
                   message="every waiting slot to be woken")
        # (5,000 in a handful of batches; under 1 s on an idle machine)
        assert time.monotonic() - closed < 5
    finally:
        dispatcher.stop()


def test_a_circuit_that_opens_again_is_left_to_its_next_close(
    ctx: FleetContext, settings: Settings, redis_conn: redis.Redis, circuit: OpenCircuit
) -> None:
    keys = ctx.keys
    probe(ctx, settings, redis_conn)
    redis_conn.hset(keys.circuit(circuit.endpoint), "failures", settings.circuit_threshold)

    woken = circuit.woken()
    assert Dispatcher(ctx, create_app(settings, ctx.destinations.file)).wake() == 0
    assert circuit.woken() == woken < WAITING  # the rest wait for the circuit's next close
    assert not redis_conn.exists(keys.circuit_waking)
    assert redis_conn.scard(keys.circuit_waiting(circuit.endpoint)) == (
        WAITING + 1 - CIRCUIT_WAKE_BATCH)
