"""The Celery app: `celery -A worker.app worker` and `monitao-pd worker` both run it.

Importing this module reads no settings: they are loaded when Celery first needs its
configuration, so the module app works from the environment, and `create_app(settings)`
builds an app for given settings (tests, the producer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from celery import Celery, Task, bootsteps, signals

from config import defaults
from config.connections import celery_broker_options, redacted_broker_info
from config.destinations import Destination
from config.logs import escape_log_records
from config.settings import Settings
from worker.broker import reuse_channel_clients
from worker.context import FleetContext
from worker.delivery import deliver_slot
from worker.dispatcher import Dispatcher
from worker.follow_ons import deliver_follow_ons, may_take
from worker.poison import record_malformed

log = logging.getLogger(__name__)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for the fleet. No secret goes in here: Flower can display them."""
    # URL, TLS (`broker_use_ssl`) and Sentinel transport options; Celery masks the Sentinel
    # password (a key containing PASS) and the URL's password when it shows its config.
    broker = celery_broker_options(settings)
    return {
        **broker,
        "broker_transport_options": {
            **broker["broker_transport_options"],
            # Every broker key under the fleet's prefix, beside its own state.
            "global_keyprefix": settings.key_prefix,
            # A crashed worker's message comes back after this; kept just above the
            # longest task (the slot lease, not this, bounds crash recovery).
            "visibility_timeout": settings.visibility_timeout,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # True would try to cancel running tasks on a broker connection loss, which the
        # threads pool cannot do (it raises and the consumer dies); their late acks fail
        # instead and the messages come back after the visibility timeout.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_default_queue": defaults.QUEUE_NAME,
        "task_create_missing_queues": True,
        "worker_send_task_events": True,
        # No task-sent events: a message a task takes as a follow-on (worker/follow_ons.py)
        # is never received by a consumer, and Flower would show it pending for ever.
        "task_send_sent_event": False,
        "enable_utc": True,
        "timezone": "UTC",
        "worker_concurrency": settings.worker_concurrency,
        "worker_pool": settings.worker_pool,
        "worker_consumer": "worker.poison:PoisonAwareConsumer",
    }


class DispatcherStep(bootsteps.StartStopStep):
    """Runs a `Dispatcher` beside every worker's consumer."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.dispatcher: Dispatcher | None = None

    def start(self, worker: Any) -> None:
        worker.app.fleet.stopping.clear()
        worker.app.fleet.destinations.start()  # watch the registry from the start
        self.dispatcher = Dispatcher(worker.app.fleet, worker.app)
        self.dispatcher.start()

    def stop(self, worker: Any) -> None:
        # Running tasks finish their pass but take no follow-on message (the pool, stopped
        # after this step, waits for them). Prefork children have their own copy of the
        # flag: theirs stop taking at the task's deadline (pass_seconds) instead.
        worker.app.fleet.stopping.set()
        if self.dispatcher is not None:
            self.dispatcher.stop()
            self.dispatcher = None

    shutdown = terminate = stop


class IntakeStep(bootsteps.StartStopStep):
    """Runs an intake consumer (producer/intake.py) beside every worker's consumer: alert
    events pushed onto the intake stream by any Redis client are enqueued as `send()`
    enqueues them."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.consumer: Any = None

    def start(self, worker: Any) -> None:
        from producer.intake import IntakeConsumer
        from producer.producer import AlertProducer

        fleet = worker.app.fleet
        producer = AlertProducer(fleet.settings, destinations=fleet.destinations,
                                 redis=fleet.redis, celery_app=worker.app)
        self.consumer = IntakeConsumer(producer).start()

    def stop(self, worker: Any) -> None:
        if self.consumer is not None:
            self.consumer.stop()
            self.consumer = None

    shutdown = terminate = stop


class MaintenanceSyncStep(bootsteps.StartStopStep):
    """Runs the maintenance windows' reconciliation with PagerDuty (worker/maintenance_sync.py)
    beside every worker's consumer; one worker at a time does the work."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.sync: Any = None

    def start(self, worker: Any) -> None:
        from worker.maintenance_sync import MaintenanceSync

        self.sync = MaintenanceSync.for_fleet(worker.app.fleet).start()

    def stop(self, worker: Any) -> None:
        if self.sync is not None:
            self.sync.stop()
            self.sync = None

    shutdown = terminate = stop


class AckWakerStep(bootsteps.StartStopStep):
    """Wakes the consumer's event loop every few milliseconds under the threads pool.

    Threads acknowledge through `call_soon` on the consumer's hub, which only runs them
    when its poll returns; idle, that can be seconds, and with late acks and prefetch 1
    the worker then takes no new message meanwhile (celery/celery#6941). A short repeating
    timer bounds that wait.
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}
    interval = 0.02

    def start(self, consumer: Any) -> None:
        if consumer.pool is not None and type(consumer.pool).__name__ == "TaskPool" and (
            "thread" in type(consumer.pool).__module__
        ):
            consumer.timer.call_repeatedly(self.interval, _noop)


def _noop() -> None:
    pass


class BrokerInfoStep(bootsteps.StartStopStep):
    """Reports the broker connection in `inspect stats` (and so in Flower) with every
    password hidden: Celery's own report drops the connection's password but shows the
    transport options and the Sentinel URLs as configured. Its `broker` replaces Celery's."""

    requires = {"celery.worker.consumer.connection:Connection"}

    def info(self, consumer: Any) -> dict[str, Any]:
        if consumer.connection is None:
            return {"broker": "N/A"}
        return {"broker": redacted_broker_info(consumer.connection.info())}


@signals.worker_init.connect(weak=False)
def _escape_worker_log_records(**_: Any) -> None:
    # `celery -A worker.app worker` does not go through the CLI, which installs it too.
    escape_log_records()


def create_app(
    settings: Settings | None = None,
    destinations: Mapping[str, Destination] | None = None,
    *,
    main: str = "monitao-pd",
) -> Celery:
    """A Celery app for the fleet, with the deliver task and the dispatcher step.

    Without `settings`, they are read from the environment when Celery first needs them.
    """
    reuse_channel_clients()
    app = Celery(main, set_as_current=False)
    fleet = FleetContext(settings, destinations)
    app.fleet = fleet  # type: ignore[attr-defined]
    if settings is not None:
        app.conf.update(celery_config(settings))
    else:
        app.add_defaults(lambda: celery_config(fleet.settings))
    app.steps["worker"].add(DispatcherStep)
    app.steps["worker"].add(IntakeStep)
    app.steps["worker"].add(MaintenanceSyncStep)
    app.steps["consumer"].add(AckWakerStep)
    app.steps["consumer"].add(BrokerInfoStep)
    from worker.metrics import MetricsStep  # the exporter, when metrics_port is set

    app.steps["worker"].add(MetricsStep)

    @app.task(bind=True, name=defaults.DELIVER_TASK, shared=False, acks_late=True,
              reject_on_worker_lost=True, ignore_result=True)
    def deliver(self: Task, destination: str, dedup_key: str) -> dict[str, Any]:
        """Make one delivery pass over the slot (destination, dedup_key), then the passes
        of deliver messages still queued (worker/follow_ons.py), within one pass's time."""
        if not isinstance(destination, str) or not isinstance(dedup_key, str):
            record_malformed(fleet, repr((destination, dedup_key)), "deliver task arguments",
                             "arguments must be two strings: destination, dedup_key")
            return {"ended": "malformed"}
        task_id = self.request.id
        deadline = time.monotonic() + fleet.settings.pass_seconds

        def take_next() -> bool:
            return may_take(fleet, deadline)

        def follow_on(destination: str, dedup_key: str) -> list[Any] | None:
            return deliver_slot(fleet, destination, dedup_key, task_id=task_id,
                                deadline=deadline, take_next=take_next).taken

        report = deliver_slot(fleet, destination, dedup_key, task_id=task_id,
                              deadline=deadline, take_next=take_next)
        follow_ons = deliver_follow_ons(fleet, follow_on, deadline=deadline,
                                        taken=report.taken)
        return {"slot": report.slot, "ended": report.ended, "finished": report.finished,
                "follow_ons": follow_ons}

    return app


app = create_app()
app.set_current()
