"""Run-time destinations with real `monitao-pd worker` processes, the real commands (as
subprocesses) and the simulator: seen by every worker within 2 s, removed with their pending
events dead-lettered and replayed, the key ring rotated with deliveries going on, a wrong key
ring dead-lettering as `undecryptable` without stopping other deliveries, and the routing
key nowhere in Redis, logs or output."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from cli.main import main
from config.keyspace import Keyspace
from config.secrets import generate_key
from config.settings import load_settings
from producer import AlertProducer
from simulator import Simulator
from tests.conftest import FAST, random_routing_key, wait_until
from tests.faults.processes import REPO, WorkerProcess, settings_env
from worker.app import create_app

pytestmark = pytest.mark.slow

# A change must reach every worker within this long (the promise).
PROPAGATION_SECONDS = 2.0


def key_hash(key: str) -> str:
    """How the simulator records a routing key (sha256, 12 hex digits)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass
class Done:
    """A command's exit status and output."""

    returncode: int
    stdout: str
    stderr: str


class Fleet:
    """Worker processes on a key ring, the real CLI, a producer, the simulator."""

    def __init__(self, tmp_path: Path, redis_url: str, prefix: str, sim: Simulator,
                 client: redis.Redis, spawn: Callable[..., WorkerProcess],
                 file_key: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp_path, self.sim, self.redis, self.spawn = tmp_path, sim, client, spawn
        self.capsys = capsys
        self.keys = Keyspace(prefix)
        config = tmp_path / "destinations.toml"
        config.write_text(f'[destinations.prod]\nrouting_key_env = "PD_KEY_PROD"\n'
                          f'events_url = "{sim.events_url}"\nrate_limit_per_minute = 100000\n',
                          encoding="utf-8")
        self.base = {k: v for k, v in os.environ.items() if not k.startswith("MONITAO_PD_")}
        self.base.update(settings_env(redis_url=redis_url, key_prefix=prefix, config=config,
                                      **FAST))
        self.base["PD_KEY_PROD"] = file_key
        self.settings = load_settings(redis_url=redis_url, key_prefix=prefix, config=config,
                                      **FAST)
        self.producer = AlertProducer(self.settings, redis=client,
                                      celery_app=create_app(self.settings, {}))
        self.counter = 0

    def env(self, ring: str | None) -> dict[str, str]:
        env = dict(self.base)
        if ring is not None:
            env["MONITAO_PD_SECRET_KEYS"] = ring
        return env

    def worker(self, name: str, ring: str | None) -> WorkerProcess:
        return self.spawn(self.env(ring), name, 4)

    def workers(self, ring: str, *names: str) -> list[WorkerProcess]:
        """Start workers at once (each waits until it is ready)."""
        with ThreadPoolExecutor(len(names)) as pool:
            return list(pool.map(lambda name: self.worker(name, ring), names))

    def cli(self, ring: str | None, *args: str, stdin: str | None = None,
            **extra_env: str) -> Done:
        """Run a command in this process (as `main()`), with the fleet's environment."""
        with pytest.MonkeyPatch.context() as patch:
            for name, value in {**self.env(ring), **extra_env}.items():
                if os.environ.get(name) != value:
                    patch.setenv(name, value)
            if ring is None:
                patch.delenv("MONITAO_PD_SECRET_KEYS", raising=False)
            patch.setattr("sys.stdin", io.StringIO(stdin or ""))
            code = main(list(args))
        captured = self.capsys.readouterr()
        return Done(code, captured.out, captured.err)

    def cli_process(self, ring: str | None, *args: str,
                    stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command as its own process."""
        return subprocess.run([sys.executable, "-m", "cli.main", *args], input=stdin,
                              env=self.env(ring), cwd=REPO, capture_output=True, text=True,
                              timeout=120)

    def add(self, ring: str, name: str, key: str, *options: str) -> Done:
        """`destinations add NAME` to the simulator, key on stdin, budget far above the load."""
        return self.cli(ring, "destinations", "add", name, "--routing-key-stdin",
                        "--events-url", self.sim.events_url, "--rate-limit", "100000",
                        *options, stdin=key)

    def send(self, destination: str, action: str = "trigger", incident: str | None = None,
             **extra: object) -> str:
        self.counter += 1
        event = {"destination": destination, "action": action, "monitor_id": "9",
                 "incident_id": incident or f"i{self.counter}", **extra}
        if action == "trigger":
            event.setdefault("summary", f"[DOWN] {self.counter}")
        return self.producer.send(event)

    def states(self, event_ids: list[str]) -> dict[str, str | None]:
        pipe = self.redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.hget(self.keys.event(event_id), "state")
        return dict(zip(event_ids, pipe.execute(), strict=True))

    def wait_final(self, event_ids: list[str], timeout: float = 60) -> dict[str, str | None]:
        def final() -> dict[str, str | None] | None:
            states = self.states(event_ids)
            return states if all(s not in (None, "pending") for s in states.values()) else None

        return wait_until(final, timeout, 0.1, f"{len(event_ids)} events to finish")

    def received(self, dedup_key: str) -> list[dict]:
        return [e for e in self.sim.received() if e["dedup_key"] == dedup_key]

    def dedup_key(self, event_id: str) -> str:
        slot = self.redis.hget(self.keys.event(event_id), "slot") or "/"
        return slot.split("/", 1)[1]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], name: str = "w1", concurrency: int = 4) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path, name, concurrency)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.kill()
        if worker.process is not None:
            worker.process.wait(timeout=10)


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str, prefix: str, sim: Simulator, redis_conn,
          spawn, routing_key: str, capsys) -> Iterator[Fleet]:
    running = Fleet(tmp_path, redis_url, prefix, sim, redis_conn, spawn, routing_key, capsys)
    yield running
    running.producer.close()


def subscribed_workers(fleet: Fleet, count: int) -> None:
    """Wait until `count` workers' registry watchers are subscribed to the channel."""
    def subscribers() -> bool:
        numbers = fleet.redis.pubsub_numsub(fleet.keys.registry_channel)
        return bool(numbers) and int(numbers[0][1]) >= count

    wait_until(subscribers, 30, 0.05, f"{count} workers to watch the registry")


def warm_up(fleet: Fleet, count: int) -> None:
    """Each worker starts watching the registry on its first lookup: deliver something."""
    ids = [fleet.send("prod") for _ in range(4 * count)]
    fleet.wait_final(ids)
    subscribed_workers(fleet, count)


def test_a_destination_added_while_two_workers_run_is_delivered_within_2_s(fleet: Fleet) -> None:
    ring = generate_key()
    fleet.workers(ring, "w1", "w2")
    warm_up(fleet, 2)
    key = random_routing_key()
    added = fleet.cli_process(ring, "destinations", "add", "acme", "--routing-key-stdin",
                              "--events-url", fleet.sim.events_url, stdin=key)
    returned = time.time()
    assert added.returncode == 0, added.stderr
    # the producer accepts it at once, and a worker delivers it
    event_id = fleet.send("acme")
    dedup_key = fleet.dedup_key(event_id)
    wait_until(lambda: fleet.received(dedup_key), PROPAGATION_SECONDS + 8, 0.02,
               "the new destination's event at the simulator")
    [receipt] = fleet.received(dedup_key)
    assert receipt["routing_key_hash"] == key_hash(key)
    print(f"\nadd returned -> received: {receipt['ts'] - returned:.3f} s")
    assert receipt["ts"] - returned < PROPAGATION_SECONDS


def test_an_update_reaches_every_worker_within_2_s(fleet: Fleet) -> None:
    ring = generate_key()
    old_key, new_key = random_routing_key(), random_routing_key()
    added = fleet.add(ring, "acme", old_key, "--severity", "critical=critical")
    assert added.returncode == 0, added.stderr
    fleet.workers(ring, "w1", "w2")
    warm_up(fleet, 2)
    # both workers hold acme in their cache: deliveries go on during the update
    stop = threading.Event()
    sent: list[str] = []

    def keep_sending() -> None:
        while not stop.is_set():
            sent.append(fleet.send("acme", level="critical"))
            time.sleep(0.03)

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        wait_until(lambda: len(fleet.sim.received()) > 30, 30, 0.05, "deliveries to acme")
        updated = fleet.cli(ring, "destinations", "update", "acme", "--routing-key-env",
                            "ACME_NEW", "--severity", "critical=warning", ACME_NEW=new_key)
        returned = time.time()
        assert updated.returncode == 0, updated.stderr
        time.sleep(PROPAGATION_SECONDS + 1.5)  # deliveries go on meanwhile (the point)
    finally:
        stop.set()
        sender.join(10)
    assert set(fleet.wait_final(sent).values()) == {"delivered"}
    acme = [e for e in fleet.sim.received()
            if e["routing_key_hash"] in (key_hash(old_key), key_hash(new_key))]
    late = [e for e in acme if e["ts"] >= returned + PROPAGATION_SECONDS]
    early = [e for e in acme if e["ts"] < returned]
    assert late and early
    assert {e["routing_key_hash"] for e in late} == {key_hash(new_key)}
    assert {e["body"]["payload"]["severity"] for e in late} == {"warning"}
    # before: the old key (the change is written a little before the command returns)
    assert key_hash(old_key) in {e["routing_key_hash"] for e in early}
    first_new = min(e["ts"] for e in acme if e["routing_key_hash"] == key_hash(new_key))
    print(f"\nupdate returned -> first event with the new key: {first_new - returned:.3f} s")


def test_removed_with_pending_events_they_are_dead_lettered_then_replayed(fleet: Fleet) -> None:
    ring = generate_key()
    assert fleet.add(ring, "acme", random_routing_key()).returncode == 0
    fleet.workers(ring, "w1", "w2")
    warm_up(fleet, 2)
    # PagerDuty fails: acme's events stay pending, backing off
    fleet.sim.set_faults(force_status=500)
    ids = []
    for n in range(3):
        ids += [fleet.send("acme", incident=f"r{n}"),
                fleet.send("acme", "resolve", incident=f"r{n}")]
    wait_until(lambda: len(fleet.sim.requests()) >= 3, 20, 0.05, "failing attempts")
    refused = fleet.cli(ring, "destinations", "remove", "acme")
    assert refused.returncode == 2 and "6 pending event(s)" in refused.stderr
    assert set(fleet.states(ids).values()) == {"pending"}

    removed = fleet.cli(ring, "destinations", "remove", "acme", "--yes")
    assert removed.returncode == 0, removed.stderr
    returned = time.time()
    states = fleet.wait_final(ids, timeout=30)
    took = time.time() - returned
    assert set(states.values()) == {"dead_lettered"}
    reasons = {fleet.redis.hget(fleet.keys.event(i), "reason") for i in ids}
    assert reasons == {"destination_removed"}
    print(f"\nremove returned -> all {len(ids)} dead-lettered: {took:.2f} s")
    assert took < 10  # woken at once, not at their backoff's or a claim's end
    for key in (fleet.keys.rate_window("acme"), fleet.keys.cooldown("acme"),
                fleet.keys.destination("acme")):
        assert not fleet.redis.exists(key)

    fleet.sim.set_faults(force_status=None)
    new_key = random_routing_key()
    assert fleet.add(ring, "acme", new_key).returncode == 0
    replayed = fleet.cli(ring, "replay", "--destination", "acme", "--reason",
                         "destination_removed")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert set(fleet.wait_final(ids).values()) == {"delivered"}
    for n in range(3):
        arrived = [e["event_action"] for e in fleet.received(f"monitao-monitor-9-incident-r{n}")
                   if e["routing_key_hash"] == key_hash(new_key)]
        assert arrived == ["trigger", "resolve"]


def test_the_key_ring_rotates_with_deliveries_going_on_and_nothing_lost(fleet: Fleet) -> None:
    old, new = generate_key(), generate_key()
    key = random_routing_key()
    assert fleet.add(old, "acme", key).returncode == 0
    workers = dict(zip(("w1", "w2"), fleet.workers(old, "w1", "w2"), strict=True))
    warm_up(fleet, 2)
    stop = threading.Event()
    sent: list[str] = []

    def keep_sending() -> None:
        while not stop.is_set():
            sent.append(fleet.send("acme"))
            time.sleep(0.02)

    def restart(name: str, ring: str) -> None:
        workers[name].stop()  # warm: it finishes what it holds; the other one delivers
        workers[name] = fleet.worker(f"{name}-{len(sent)}", ring)

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        for name in workers:
            restart(name, f"{new},{old}")
        rotated = fleet.cli(f"{new},{old}", "destinations", "reencrypt")
        assert rotated.returncode == 0 and "re-encrypted 1 of 1" in rotated.stdout, rotated
        for name in list(workers):
            restart(name, new)
        sent_before = len(sent)
        wait_until(lambda: len(sent) > sent_before + 20, 20, 0.05, "sends on the new ring")
    finally:
        stop.set()
        sender.join(10)
    states = fleet.wait_final(sent, timeout=90)
    assert set(states.values()) == {"delivered"}, {s for s in states.values()}
    received = {e["dedup_key"] for e in fleet.sim.received()
                if e["routing_key_hash"] == key_hash(key)}
    assert {fleet.dedup_key(i) for i in sent} <= received
    assert fleet.redis.zcard(fleet.keys.dead_letters) == 0
    checked = fleet.cli(new, "config", "check")
    assert checked.returncode == 0, checked.stderr
    print(f"\n{len(sent)} events delivered across the rotation, none lost")


def test_a_wrong_key_ring_dead_letters_as_undecryptable_and_other_deliveries_go_on(
    fleet: Fleet,
) -> None:
    right, wrong = generate_key(), generate_key()
    key = random_routing_key()
    assert fleet.add(right, "acme", key).returncode == 0
    bad = fleet.worker("wrong", wrong)
    acme = [fleet.send("acme") for _ in range(5)]
    prod = [fleet.send("prod") for _ in range(5)]
    assert set(fleet.wait_final(acme).values()) == {"dead_lettered"}
    assert {fleet.redis.hget(fleet.keys.event(i), "reason") for i in acme} == {"undecryptable"}
    assert set(fleet.wait_final(prod).values()) == {"delivered"}
    later = [fleet.send("prod") for _ in range(5)]
    assert set(fleet.wait_final(later).values()) == {"delivered"}
    assert bad.alive
    error = fleet.redis.hget(fleet.keys.event(acme[0]), "last_error")
    assert "not in MONITAO_PD_SECRET_KEYS" in error and key not in error

    status = fleet.cli(wrong, "status", "--no-ping")
    assert "undecryptable" in status.stdout and "acme (5 event(s))" in status.stdout
    checked = fleet.cli(wrong, "config", "check")
    assert checked.returncode == 2 and "acme: its routing key cannot be opened" in checked.stderr

    # fixed: a worker with the right ring, and a replay, deliver them
    bad.stop()
    fleet.worker("right", right)
    replayed = fleet.cli(right, "replay", "--reason", "undecryptable")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert set(fleet.wait_final(acme).values()) == {"delivered"}
    assert all(e["routing_key_hash"] == key_hash(key)
               for i in acme for e in fleet.received(fleet.dedup_key(i)))


def test_the_routing_key_is_nowhere_in_redis_logs_or_output(fleet: Fleet) -> None:
    ring = generate_key()
    key, second = random_routing_key(), random_routing_key()
    outputs = []

    def cli(*args: str, **options) -> Done:
        done = fleet.cli(ring, *args, **options)
        outputs.append(done.stdout + done.stderr)
        return done

    added = fleet.add(ring, "acme", key, "--account", "acme")
    outputs.append(added.stdout + added.stderr)
    assert added.returncode == 0
    worker = fleet.worker("w1", ring)
    ids = [fleet.send("acme", incident="s1"), fleet.send("acme", "resolve", incident="s1")]
    assert set(fleet.wait_final(ids).values()) == {"delivered"}
    fleet.sim.set_faults(force_status=400)
    rejected = fleet.send("acme", incident="s2")
    fleet.wait_final([rejected])
    fleet.sim.set_faults(force_status=None)
    assert cli("test-destination", "acme", "--timeout", "30").returncode == 0
    for args in (["destinations", "list"], ["destinations", "list", "--json"],
                 ["destinations", "show", "acme"], ["destinations", "show", "acme", "--json"],
                 ["status", "--no-ping"], ["status", "--json", "--no-ping"],
                 ["config", "check"], ["timeline", "s1"], ["dlq", "list"],
                 ["dlq", "show", rejected], ["dlq", "show", rejected, "--json"]):
        assert cli(*args).returncode in (0, 1), outputs[-1]
    assert cli("destinations", "update", "acme", "--routing-key-env", "SECOND",
               SECOND=second).returncode == 0
    assert cli("destinations", "reencrypt").returncode == 0
    assert cli("destinations", "remove", "acme", "--yes").returncode == 0
    worker.stop()

    everything = "\n".join(outputs) + worker.log()
    values = []
    for name in fleet.redis.scan_iter(match=f"{fleet.keys.prefix}*"):
        kind = fleet.redis.type(name)
        reader = {"hash": fleet.redis.hgetall, "string": fleet.redis.get,
                  "zset": lambda k: fleet.redis.zrange(k, 0, -1, withscores=True),
                  "set": fleet.redis.smembers, "list": lambda k: fleet.redis.lrange(k, 0, -1),
                  "stream": fleet.redis.xrange}[kind]
        values.append(f"{name} {reader(name)}")
    everything += "\n".join(values)
    assert len(values) > 10 and "attempt" in everything
    for secret in (key, second, ring):
        assert secret not in everything
