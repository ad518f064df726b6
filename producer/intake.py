"""The intake stream: alert events pushed onto Redis by a producer in any language.

    XADD {prefix}intake * event '<AlertEvent JSON>'

Every worker runs an `IntakeConsumer` in one consumer group. Entries are validated and
enqueued exactly as `AlertProducer.send()` does (`prepare`, then the same enqueue script,
idempotent by `event_id`), then acknowledged and deleted (`XACK` + `XDEL`) once the
script has returned; the stream is never trimmed past an unprocessed entry. An entry that
is not a valid event becomes a dead letter with reason `invalid`, its raw text and the
problems kept (`monitao-pd dlq show`), and intake goes on.

Order: entries of one incident are enqueued in stream order (a resolve never overtakes its
trigger), because one consumer at a time takes entries, holding a lease it renews at every
read. When its worker dies, the lease runs out (`MONITAO_PD_INTAKE_LEASE_SECONDS`) and the
next consumer to take it first claims (`XAUTOCLAIM`) and processes every entry left
pending, then reads new ones (and forgets the consumers left with nothing pending). A
redelivered entry is a no-op: an entry without an `event_id` gets one derived from its
stream id, and an invalid one's dead letter is named after its stream id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from config import defaults
from config.errors import InvalidEventError, RedisUnavailableError
from config.idempotent import IdempotentScript
from producer.event import AlertEvent
from producer.producer import AlertProducer
from worker import dead_letters

log = logging.getLogger(__name__)

# KEYS: lease   ARGV: token, ttl_ms
# Renews the lease when this consumer holds it (1), takes it when nobody does (2), else 0.
LEASE = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""
# KEYS: lease   ARGV: token. Gives the lease up if this consumer holds it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
EVENT_FIELD = "event"
# Entries without an event_id get uuid5(this, "<stream key>:<entry id>"): the same entry
# redelivered gets the same id, so it is enqueued once.
ID_NAMESPACE = uuid.UUID("5b4e3a52-8c1e-4f0a-9d35-0f6f1c2a7e11")
Entry = tuple[str, dict[str, str] | None]


class IntakeConsumer:
    """Takes entries off the intake stream and enqueues them; one thread per worker."""

    def __init__(self, producer: AlertProducer, *, name: str | None = None,
                 block_seconds: float = defaults.INTAKE_BLOCK_SECONDS) -> None:
        self.producer = producer
        settings = producer.settings
        self.keys = producer.keys
        self.stream, self.group = self.keys.intake, defaults.INTAKE_GROUP
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.batch = settings.intake_batch
        self.lease_ms = int(settings.intake_lease_seconds * 1000)
        self.block_ms = int(block_seconds * 1000)
        # One connection of its own: a blocked read is woken with CLIENT UNBLOCK on stop.
        self.redis = redis.Redis(connection_pool=producer.redis.connection_pool,
                                 single_connection_client=True)
        self._token = secrets.token_hex(8)
        self._lease = IdempotentScript(self.redis, LEASE, self.keys)
        self._release = IdempotentScript(self.redis, RELEASE, self.keys)
        self._client_id: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.processed = 0

    def ensure_group(self) -> None:
        """Create the stream's consumer group (reading from the start) if it is missing."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def start(self) -> IntakeConsumer:
        """Run in a daemon thread (idempotent)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name="monitao-intake",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking entries, give the lease up, wait for the thread."""
        self._stop.set()
        if self._client_id is not None:
            # wake a blocked read at once instead of after its block time
            with contextlib.suppress(redis.RedisError):
                self.producer.redis.client_unblock(self._client_id)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with contextlib.suppress(redis.RedisError):  # else the lease runs out by itself
            self._release(keys=[self.keys.intake_lease], args=[self._token])
        self.redis.close()

    def run(self) -> None:
        """The loop: hold the lease, take entries, process them; until stopped."""
        failing = False
        while not self._stop.is_set():
            try:
                if self._client_id is None:
                    self.ensure_group()
                    self._client_id = int(self.redis.client_id())
                self.poll()
                if failing:
                    log.info("intake consumer reconnected")
                    failing = False
            except (redis.RedisError, RedisUnavailableError, OSError) as exc:
                if self._stop.is_set():
                    return
                if not failing:
                    log.warning("intake consumer cannot reach Redis (%s); retrying",
                                exc.__class__.__name__)
                failing = True
                self._client_id = None
                self._stop.wait(self.block_ms / 1000 * 2)
            except Exception:  # a bug must not end intake on this worker: log, go on
                log.exception("intake consumer failed; retrying")
                self._stop.wait(self.block_ms / 1000 * 2)

    def poll(self) -> int:
        """One turn: renew or take the lease, then process one batch; return its size.

        Without the lease it waits a block time and returns 0. Having just taken it, the
        consumer first claims what the previous holder left pending.
        """
        held = int(self._lease(keys=[self.keys.intake_lease], args=[self._token, self.lease_ms]))
        if not held:
            self._stop.wait(self.block_ms / 1000)
            return 0
        if held == 2:
            self._claim_pending()
        entries = self._read("0")  # this consumer's own pending entries first, in order
        if not entries:
            entries = self._read(">", block=True)
        return self.process(entries)

    def _claim_pending(self) -> None:
        start = "0-0"
        while True:
            reply = self.redis.xautoclaim(self.stream, self.group, self.name, 0,
                                          start_id=start, count=self.batch)
            start = reply[0]
            if start == "0-0":
                break
        # Consumers of workers gone for good would pile up in the group, one per restart:
        # with nothing pending they hold nothing (a live one is re-made at its next read).
        for consumer in self.redis.xinfo_consumers(self.stream, self.group):
            if consumer["name"] != self.name and not consumer["pending"]:
                self.redis.xgroup_delconsumer(self.stream, self.group, consumer["name"])

    def _read(self, position: str, *, block: bool = False) -> list[Entry]:
        reply = self.redis.xreadgroup(self.group, self.name, {self.stream: position},
                                      count=self.batch, block=self.block_ms if block else None)
        return [entry for _, entries in reply or [] for entry in entries]

    def process(self, entries: Sequence[Entry]) -> int:
        """Validate each entry, enqueue the valid ones together (in order), file the invalid
        ones as dead letters, then acknowledge and delete them all."""
        if not entries:
            return 0
        prepared: list[AlertEvent] = []
        invalid: list[tuple[str, str, list[str], dict[str, Any]]] = []
        for entry_id, fields in entries:
            if not fields:  # deleted while pending: nothing left to do but the ack
                continue
            try:
                prepared.append(self._prepare(entry_id, fields))
            except InvalidEventError as exc:
                invalid.append((entry_id, _raw(fields), exc.problems,
                                _labels(fields.get(EVENT_FIELD))))
            except Exception as exc:  # noqa: BLE001 - one entry must never stop intake
                problem = f"event: cannot be validated ({type(exc).__name__}: {exc})"[:500]
                invalid.append((entry_id, _raw(fields), [problem],
                                _labels(fields.get(EVENT_FIELD))))
        if prepared:
            self.producer.enqueue(prepared)
        for entry_id, raw, problems, labels in invalid:
            filed = dead_letters.record_invalid(
                self.redis, self.keys, f"intake-{entry_id}", raw,
                f"intake stream entry {entry_id}", problems, **labels)
            if filed:
                log.warning("intake entry %s is not a valid event, dead-lettered as "
                            "intake-%s: %s", entry_id, entry_id, "; ".join(problems)[:300])
        ids = [entry_id for entry_id, _ in entries]
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(self.stream, self.group, *ids)
        pipe.xdel(self.stream, *ids)
        pipe.execute()
        self.processed += len(ids)
        return len(ids)

    def _prepare(self, entry_id: str, fields: dict[str, str]) -> AlertEvent:
        raw = fields.get(EVENT_FIELD)
        if raw is None:
            raise InvalidEventError([f"{EVENT_FIELD}: the entry has no {EVENT_FIELD!r} field "
                                     f"(fields: {', '.join(sorted(fields)) or 'none'})"])
        try:
            data = json.loads(raw)
        except RecursionError:
            raise InvalidEventError([f"{EVENT_FIELD}: JSON nested too deeply"]) from None
        except ValueError as exc:
            raise InvalidEventError([f"{EVENT_FIELD}: not valid JSON ({exc})"]) from None
        if isinstance(data, dict) and "event_id" not in data:
            data["event_id"] = uuid.uuid5(ID_NAMESPACE, f"{self.stream}:{entry_id}").hex
        return self.producer.prepare(data)


def _raw(fields: dict[str, str]) -> str:
    """What to keep of an invalid entry: its event field, else all of its fields."""
    raw = fields.get(EVENT_FIELD)
    return raw if raw is not None else json.dumps(fields, ensure_ascii=False)


def _labels(raw: str | None) -> dict[str, str]:
    """The incident id and action of an invalid entry, when it names them plainly (so
    `dlq list` shows which incident it was about)."""
    try:
        data = json.loads(raw) if raw is not None else None
    except (ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    found = {}
    for name in ("incident_id", "action"):
        value = data.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool):
            text = str(value)
            if text.isprintable() and len(text) <= 100:
                found[name] = text
    return found
