"""`AlertProducer.prepare()` (what `send()` checks): every problem of an event at once, its
fields' and its destination's and level's, so one round of fixes is enough."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from config.destinations import parse_destinations
from config.errors import InvalidEventError, UnknownDestinationError
from config.settings import Settings
from producer import AlertProducer
from worker.app import create_app


@pytest.fixture
def producer(settings: Settings, redis_conn: redis.Redis, routing_key: str
             ) -> Iterator[AlertProducer]:
    destinations = parse_destinations({"destinations": {
        name: {"routing_key": routing_key, "events_url": "http://127.0.0.1:9/v2/enqueue"}
        for name in ("prod", "staging")}}, environ={})
    app = create_app(settings, destinations)
    yield AlertProducer(settings, destinations=destinations, redis=redis_conn, celery_app=app)
    app.close()


def problems_of(producer: AlertProducer, event: Any) -> list[str]:
    with pytest.raises(InvalidEventError) as excinfo:
        producer.send(event)
    return excinfo.value.problems


def test_field_destination_and_level_problems_are_all_listed(producer: AlertProducer) -> None:
    problems = problems_of(producer, {
        "action": "trigger", "monitor_id": "1 2", "incident_id": "3", "level": "catastrophic",
        "destination": "prod", "status_code": 1000})
    assert [p.split(":", 1)[0] for p in problems] == [
        "monitor_id", "summary", "status_code", "level"]
    assert "level: 'catastrophic' is not in destination 'prod'" in problems[-1]


def test_an_unknown_destination_beside_other_problems(producer: AlertProducer) -> None:
    problems = problems_of(producer, {"action": "resolve", "monitor_id": "1",
                                      "incident_id": "", "destination": "nowhere"})
    assert [p.split(":", 1)[0] for p in problems] == ["incident_id", "destination"]
    assert "unknown destination 'nowhere' (configured: prod, staging)" in problems[1]


def test_a_missing_destination_among_several_beside_other_problems(
    producer: AlertProducer,
) -> None:
    problems = problems_of(producer, {"action": "fire", "monitor_id": "1", "incident_id": "2"})
    assert [p.split(":", 1)[0] for p in problems] == ["action", "destination"]
    assert "required unless exactly one destination is configured" in problems[1]


def test_an_unknown_destination_alone_is_still_an_unknown_destination_error(
    producer: AlertProducer,
) -> None:
    with pytest.raises(UnknownDestinationError):
        producer.send({"action": "resolve", "monitor_id": "1", "incident_id": "2",
                       "destination": "nowhere"})


def test_send_many_lists_every_problem_of_every_event(producer: AlertProducer) -> None:
    with pytest.raises(InvalidEventError) as excinfo:
        producer.send_many([
            {"action": "trigger", "monitor_id": "1", "incident_id": "2", "destination": "prod"},
            {"action": "resolve", "monitor_id": "1", "incident_id": "2", "destination": "x",
             "level": "nope"},
        ])
    assert excinfo.value.problems[0] == "event 0: summary: required for a trigger"
    assert [p.split(":", 2)[1].strip() for p in excinfo.value.problems] == [
        "summary", "destination"]
