"""`/v1/dead-letters`: list, count, show, replay and purge, as `monitao-pd dlq` and
`monitao-pd replay` do. Event ids may be unique prefixes of 8+ characters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.auth import operator, require
from api.models import (
    DeadLetterDetail,
    DeadLetterPage,
    Purged,
    ReasonCounts,
    ReplayRequest,
    ReplayResult,
)
from api.routers import problems
from api.routers.incidents import Cursor, Limit
from api.services import ServicesDep
from config import defaults
from config.tokens import Token
from worker import dead_letters
from worker.replay_request import replay_dead_letters

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])

EventId = Annotated[str, Path(min_length=1, max_length=128,
                              description="the event id, or a unique prefix of 8+ characters",
                              examples=["4b1f0f6c2a6e"])]
Destination = Annotated[str | None, Query(max_length=256, description="only this destination")]
Reason = Annotated[str | None, Query(max_length=256,
                                     description="only this reason (rejected, expired, ...)")]
Since = Annotated[datetime | None, Query(description="dead-lettered at or after (ISO 8601)")]
Until = Annotated[datetime | None, Query(description="dead-lettered at or before (ISO 8601)")]


def _millis(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def _filters(destination: str | None, reason: str | None, since: datetime | None,
             until: datetime | None) -> dead_letters.Filters:
    return dead_letters.Filters(destination=destination, reason=reason,
                                since_ms=_millis(since), until_ms=_millis(until))


@router.get("", response_model=DeadLetterPage, responses=problems(),
            summary="List dead letters (oldest first, in pages)")
def list_dead_letters(services: ServicesDep,
                      _: Annotated[Token, require("dead-letters:read")],
                      destination: Destination = None, reason: Reason = None,
                      since: Since = None, until: Until = None, cursor: Cursor = None,
                      limit: Limit = defaults.API_PAGE_DEFAULT) -> dict[str, Any]:
    """Dead letters matching every filter given, with replays on their way
    (`state: replay_pending`), as `monitao-pd dlq list`."""
    letters, next_cursor = dead_letters.page(
        services.redis, services.keys, _filters(destination, reason, since, until),
        cursor=cursor, limit=limit)
    return {"dead_letters": letters, "next_cursor": next_cursor}


@router.get("/counts", response_model=ReasonCounts, responses=problems(),
            summary="Count dead letters by reason")
def count_dead_letters(services: ServicesDep,
                       _: Annotated[Token, require("dead-letters:read")],
                       destination: Destination = None, reason: Reason = None,
                       since: Since = None, until: Until = None) -> dict[str, Any]:
    """As `monitao-pd dlq counts`: replays on their way are not counted."""
    counts = dead_letters.counts_by_reason(services.redis, services.keys,
                                           _filters(destination, reason, since, until))
    return {"counts": counts, "total": sum(counts.values())}


@router.post("/replay", response_model=ReplayResult, responses=problems(400, 404, 408, 413),
             summary="Replay dead letters")
def replay(request_body: ReplayRequest, services: ServicesDep,
           caller: Annotated[Token, require("dead-letters:write")]) -> dict[str, Any]:
    """Send dead letters again, each key's in production order, never resurrecting a
    stale trigger (`superseded` instead, unless `force`): the decisions of
    `monitao-pd replay`. Unknown ids: 404, nothing replayed."""
    filters = _filters(request_body.destination, request_body.reason, request_body.since,
                       request_body.until)
    report = replay_dead_letters(
        services.redis, services.settings, event_ids=request_body.event_ids,
        filters=filters, everything=request_body.everything, dry_run=request_body.dry_run,
        force=request_body.force, operator=operator(caller))
    return report.as_dict()


@router.get("/{event_id}", response_model=DeadLetterDetail, responses=problems(404),
            summary="Show one dead letter")
def show_dead_letter(event_id: EventId, services: ServicesDep,
                     _: Annotated[Token, require("dead-letters:read")]) -> dict[str, Any]:
    """The stored event, PagerDuty's errors, every attempt, and the body as it is sent
    (rebuilt, routing key masked), as `monitao-pd dlq show`."""
    return dead_letters.show(services.redis, services.keys, event_id, services.destinations,
                             retention_seconds=services.settings.timeline_retention_seconds)


@router.delete("/{event_id}", response_model=Purged, responses=problems(404, 409),
               summary="Purge one dead letter")
def purge_dead_letter(event_id: EventId, services: ServicesDep,
                      caller: Annotated[Token, require("dead-letters:write")]) -> Purged:
    """It leaves the dead letters for good; its record stays (state `purged`) for the
    event retention. A dead letter whose replay is on its way: 409."""
    return Purged(event_id=dead_letters.purge_one(
        services.redis, services.keys, services.settings, event_id,
        operator=operator(caller)))
