"""`GET /v1/incidents/{incident_id}/timeline`: what `monitao-pd timeline` shows."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.auth import require
from api.models import TimelinePage
from api.routers import problems
from api.services import ServicesDep
from config import defaults
from config.tokens import Token
from producer.event import ID_PATTERN, MAX_ID_LENGTH
from worker import timeline

router = APIRouter(prefix="/v1", tags=["incidents"])

IncidentId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
                                 description="MoniTao's incident id", examples=["456"])]
Cursor = Annotated[str | None, Query(max_length=512,
                                     description="`next_cursor` of the previous page")]
Limit = Annotated[int, Query(ge=1, le=defaults.API_PAGE_MAX, description="entries per page")]


@router.get("/incidents/{incident_id}/timeline", response_model=TimelinePage,
            responses=problems(404), summary="An incident's delivery timeline")
def get_timeline(incident_id: IncidentId, services: ServicesDep,
                 _: Annotated[Token, require("incidents:read")], cursor: Cursor = None,
                 limit: Limit = defaults.API_PAGE_DEFAULT) -> dict[str, Any]:
    """Every stage of every event of the incident, oldest first, in pages; the first page
    also carries the derived figures of the whole timeline (`timeline --summary`)."""
    entries, summary, next_cursor = timeline.page_with_summary(
        services.redis, services.keys, incident_id, cursor=cursor, limit=limit,
        retention_seconds=services.settings.timeline_retention_seconds)
    return {"incident_id": incident_id, "entries": entries, "summary": summary,
            "next_cursor": next_cursor}
