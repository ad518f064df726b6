"""The dispatcher: in every worker, publishes the deliver task of each slot that comes due.

Claiming is one atomic script, so any number of workers can run a dispatcher and each due
slot is published once per claim period: there is no single point of failure and no
Celery ETA anywhere. Due slots are claimed longest-due first, and not at all while the
broker queue is at its cap, so an alert storm waits in the schedule, not as duplicates.
Each tick also wakes, in bounded batches, the slots that waited on a circuit which has
closed (worker/circuit_wake.py), so that a close over many waiting slots costs Redis no
long script.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery

from config import defaults
from config.keyspace import split_slot
from worker.broker import publish_deliveries
from worker.circuit_wake import wake_waiters
from worker.context import FleetContext

log = logging.getLogger(__name__)


class Dispatcher:
    """A daemon thread claiming due slots and publishing their deliver tasks."""

    def __init__(self, ctx: FleetContext, app: Celery) -> None:
        self.ctx = ctx
        self.app = app
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="monitao-dispatcher",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> int:
        """Wake the slots waiting on each circuit that closed with some left, batch after
        batch (one script each) for at most CIRCUIT_WAKE_SECONDS_PER_TICK; return how many
        were woken."""
        ctx, total = self.ctx, 0
        deadline = time.monotonic() + defaults.CIRCUIT_WAKE_SECONDS_PER_TICK
        while woken := wake_waiters(ctx.redis, ctx.keys, ctx.settings.circuit_threshold):
            total += woken
            if time.monotonic() >= deadline:
                break
        return total

    def tick(self) -> int:
        """Claim and publish one batch of due slots; return how many were published."""
        settings, keys = self.ctx.settings, self.ctx.keys
        room = settings.max_queue_length - self._queue_length()
        if room <= 0:
            return 0
        slots = self.ctx.scripts.claim_due(
            keys=[keys.schedule],
            args=[int(settings.claim_seconds * 1000), min(room, settings.dispatch_batch)],
        )
        publish_deliveries(self.app, [split_slot(slot) for slot in slots])
        return len(slots)

    def _queue_length(self) -> int:
        return int(self.ctx.broker_redis.llen(self.ctx.keys.queue(defaults.QUEUE_NAME)))

    def _run(self) -> None:
        interval = self.ctx.settings.dispatch_interval
        failing = False
        while not self._stop.is_set():
            try:
                woken = self.wake()
                published = self.tick()
                if failing:
                    log.info("dispatcher reconnected")
                    failing = False
            except Exception as exc:  # noqa: BLE001 - keep dispatching once Redis is back
                if not failing:
                    log.warning("dispatcher cannot reach Redis or the broker (%s); retrying",
                                exc.__class__.__name__)
                failing = True
                woken = published = 0
            # A full batch means more may be due, and slots woken mean more may be left to
            # wake: go again at once.
            if published < self.ctx.settings.dispatch_batch and not woken:
                self._stop.wait(interval * (8 if failing else 1))
