"""`AlertProducer`: MoniTao's side. Validates events, enqueues them atomically, wakes workers."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from celery import Celery

from config.connections import redis_client
from config.destinations import Destination, load_destinations
from config.errors import InvalidEventError, RedisUnavailableError, UnknownDestinationError
from config.keyspace import Keyspace
from config.lookup import DestinationLookup
from config.settings import Settings, load_settings, redact_url
from producer.enqueue import DUPLICATE, PUBLISH, enqueue_arguments, register_enqueue
from producer.event import AlertEvent, parse_event
from worker.broker import publish_deliveries

log = logging.getLogger(__name__)




class AlertProducer:
    """Sends MoniTao alert events to the fleet; never blocks on PagerDuty.

    Once `send()` returns, the event is in Redis and will end in exactly one final state.
    Routing keys are not needed here and never reach Redis: events name a destination.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        destinations: Mapping[str, Destination] | None = None,
        redis: redis.Redis | None = None,
        celery_app: Celery | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        file = destinations if destinations is not None else (
            load_destinations(self.settings.config, resolve_secrets=False)
            if self.settings.config else {})
        self.keys = Keyspace(self.settings.key_prefix)
        self.redis = redis or redis_client(self.settings)
        # the file's destinations, then the registry's: one added a moment ago is found. Only
        # names and severity maps are read here, so stored settings are not validated again
        # (workers validate what they deliver with).
        self.destinations = DestinationLookup(self.redis, self.keys, file_destinations=file,
                                              validate=False)
        self._script = register_enqueue(self.redis)
        if celery_app is None:
            from worker.app import create_app

            celery_app = create_app(self.settings)
        self.celery = celery_app

    def prepare(self, event: AlertEvent | dict[str, Any]) -> AlertEvent:
        """Validate an event and bind it to its destination; raise `InvalidEventError`."""
        event = parse_event(event)
        name = event.destination
        if name is None:
            name = self.destinations.only()
            if name is None:
                raise InvalidEventError([
                    "destination: required unless exactly one destination is configured "
                    f"({self.destinations.describe_names()})"
                ])
        destination = self.destinations.get(name)
        if destination is None:
            raise UnknownDestinationError([
                f"destination: unknown destination {name!r} "
                f"(configured: {self.destinations.describe_names()})"
            ])
        if event.level not in destination.severity_map:
            raise InvalidEventError([
                f"level: {event.level!r} is not in destination {name!r}'s severity_map "
                f"({', '.join(sorted(destination.severity_map))})"
            ])
        return event if event.destination == name else event.model_copy(
            update={"destination": name}
        )

    def send(self, event: AlertEvent | dict[str, Any]) -> str:
        """Validate and enqueue one event; return its event id.

        Sending an id that was already accepted is a no-op that returns the same id.
        Raises `InvalidEventError` (nothing enqueued) or `RedisUnavailableError`.
        """
        return self._enqueue([self.prepare(event)])[0]

    def send_many(self, events: Iterable[AlertEvent | dict[str, Any]]) -> list[str]:
        """Validate every event first, then enqueue them all in one round trip, in order.

        If any event is invalid, nothing is sent and `InvalidEventError` names each problem
        with the event's position. Returns the event ids in the order given.
        """
        events = list(events)
        # the run-time destinations they name, read in one round trip
        self.destinations.preload(
            name for name in (raw.get("destination") if isinstance(raw, dict)
                              else getattr(raw, "destination", None) for raw in events)
            if isinstance(name, str))
        prepared, problems = [], []
        for index, raw in enumerate(events):
            try:
                prepared.append(self.prepare(raw))
            except InvalidEventError as exc:
                problems.extend(f"event {index}: {p}" for p in exc.problems)
        if problems:
            raise InvalidEventError(problems)
        return self._enqueue(prepared)

    def _enqueue(self, prepared: list[AlertEvent]) -> list[str]:
        if not prepared:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for event in prepared:
            keys, argv = enqueue_arguments(event, event.destination or "", self.keys, self.settings)
            self._script(keys=keys, args=argv, client=pipe)
        try:
            results = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailableError(
                f"cannot enqueue: Redis at {redact_url(self.settings.redis_url)} "
                f"did not answer ({exc.__class__.__name__})"
            ) from None

        publish = []
        for event, result in zip(prepared, results, strict=True):
            if result == DUPLICATE:
                log.info("event %s was already accepted; not enqueued again", event.event_id)
            elif result == PUBLISH:
                publish.append((event.destination or "", event.dedup_key))
        if publish:
            self._publish(publish)
        return [event.event_id for event in prepared]

    def _publish(self, slots: list[tuple[str, str]]) -> None:
        # The events are already safe in Redis: if the broker refuses now, their schedule
        # entries come due and a dispatcher publishes the tasks, so a failure only delays.
        # One kombu producer serves the whole batch, in one broker round trip.
        try:
            publish_deliveries(self.celery, slots)
        except Exception as exc:  # noqa: BLE001 - any broker failure is recoverable here
            log.warning(
                "could not publish the deliver tasks of %d slot(s) (%s); a dispatcher will",
                len(slots), exc.__class__.__name__,
            )

    def close(self) -> None:
        """Release the Redis connections."""
        self.redis.close()

    def __enter__(self) -> AlertProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
