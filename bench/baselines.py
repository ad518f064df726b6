"""The baselines `make bench` compares the fleet with: a tiny Celery app of its own.

- `bench.noop`: a Celery task that does nothing; the floor of Celery's cost per task.
- `bench.naive_deliver(url, body)`: what a user would write first: one task per event that
  posts the body with httpx (one shared client per process) and lets Celery's
  `autoretry_for` retry on any HTTP error. No per-key order, no fleet-wide rate limit, no
  lease, no timeline, and the routing key travels in every broker message.

Both run on the same Redis broker with the same Celery settings as the fleet (late acks,
prefetch 1, task events, the same ack waker under the threads pool) but none of the
fleet's code (so none of its kombu fix either), configured from the environment:
BENCH_BROKER_URL and BENCH_PREFIX. Start with
`celery -A bench.baselines worker -Q bench --pool threads -c 64`.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import httpx
from celery import Celery, bootsteps

QUEUE = "bench"


class AckWakerStep(bootsteps.StartStopStep):
    """The fleet's ack waker (worker/app.py), copied so this app stays plain Celery."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def start(self, consumer: Any) -> None:
        if "thread" in type(consumer.pool).__module__:
            consumer.timer.call_repeatedly(0.02, lambda: None)


def create_app(broker_url: str, prefix: str) -> Celery:
    """The baseline app on `broker_url`, every broker key under `prefix`."""
    app = Celery("monitao-pd-bench", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        broker_transport_options={"global_keyprefix": prefix, "visibility_timeout": 60},
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=QUEUE,
        worker_send_task_events=True,
        task_send_sent_event=False,
        enable_utc=True,
    )
    app.steps["consumer"].add(AckWakerStep)
    client_lock = threading.Lock()
    clients: dict[int, httpx.Client] = {}

    def http() -> httpx.Client:
        with client_lock:
            pid = os.getpid()
            if pid not in clients:
                clients[pid] = httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0),
                                            limits=httpx.Limits(max_connections=100,
                                                                max_keepalive_connections=100))
            return clients[pid]

    @app.task(name="bench.noop", ignore_result=True)
    def noop(*args: Any) -> None:
        """Nothing at all."""

    @app.task(name="bench.naive_deliver", ignore_result=True,
              autoretry_for=(httpx.HTTPError,), retry_backoff=True)
    def naive_deliver(url: str, body: dict[str, Any]) -> None:
        """POST one event; any HTTP error (status or network) is retried by Celery."""
        http().post(url, json=body).raise_for_status()

    return app


app = create_app(os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/9"),
                 os.environ.get("BENCH_PREFIX", "bench-baseline:"))
