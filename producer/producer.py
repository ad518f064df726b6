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


def _names(problems: list[str], field: str) -> bool:
    return any(problem.startswith(f"{field}: ") for problem in problems)


class AlertProducer:
    """Sends MoniTao alert events to the fleet; never blocks on PagerDuty.

    Once `send()` returns, the event is in Redis and will end in exactly one final state.
    Routing keys are not needed here and never reach Redis: events name a destination.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        destinations: Mapping[str, Destination] | DestinationLookup | None = None,
        redis: redis.Redis | None = None,
        celery_app: Celery | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.keys = Keyspace(self.settings.key_prefix)
        self.redis = redis or redis_client(self.settings)
        if isinstance(destinations, DestinationLookup):  # a worker's own (its intake)
            self.destinations = destinations
        else:
            file = destinations if destinations is not None else (
                load_destinations(self.settings.config, resolve_secrets=False)
                if self.settings.config else {})
            # the file's destinations, then the registry's: one added a moment ago is found.
            # Only names and severity maps are read here, so stored settings are not
            # validated again (workers validate what they deliver with).
            self.destinations = DestinationLookup(self.redis, self.keys,
                                                  file_destinations=file, validate=False)
        self._script = register_enqueue(self.redis)
        if celery_app is None:
            from worker.app import create_app

            celery_app = create_app(self.settings)
        self.celery = celery_app

    def prepare(self, event: AlertEvent | dict[str, Any]) -> AlertEvent:
        """Validate an event and bind it to its destination; raise `InvalidEventError`
        naming every problem: the event's fields, its destination and its level."""
        try:
            parsed: AlertEvent | None = parse_event(event)
            problems: list[str] = []
        except InvalidEventError as exc:
            if not isinstance(event, dict):
                raise
            parsed, problems = None, list(exc.problems)
        # what the checks below read: the parsed event's, or the raw fields of an invalid one
        fields: Mapping[str, Any] = (
            {"destination": parsed.destination, "level": parsed.level} if parsed is not None
            else event)
        name = fields.get("destination")
        unknown = False
        destination = None
        if not _names(problems, "destination"):
            if name is None:
                name = self.destinations.only()
                if name is None:
                    problems.append("destination: required unless exactly one destination is "
                                    f"configured ({self.destinations.describe_names()})")
            if name is not None:
                destination = self.destinations.get(name)
                if destination is None:
                    unknown = True
                    problems.append(f"destination: unknown destination {name!r} "
                                    f"(configured: {self.destinations.describe_names()})")
        level = fields.get("level", "critical")
        if (destination is not None and isinstance(level, str) and not _names(problems, "level")
                and level.strip() not in destination.severity_map):
            problems.append(f"level: {level!r} is not in destination {name!r}'s severity_map "
                            f"({', '.join(sorted(destination.severity_map))})")
        if problems:
            raise (UnknownDestinationError if unknown and len(problems) == 1
                   else InvalidEventError)(problems)
        assert parsed is not None and isinstance(name, str)
        return parsed if parsed.destination == name else parsed.model_copy(
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

    def enqueue(self, prepared: list[AlertEvent]) -> list[str]:
        """Enqueue events that `prepare` returned, in one round trip, in order; return their
        ids (the intake stream validates entry by entry, then enqueues the valid ones)."""
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
