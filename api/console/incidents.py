"""Incidents: one incident's delivery timeline, drawn as a vertical timeline.

`timeline.page_with_summary`, as `GET /v1/incidents/{id}/timeline` answers it: the
summary figures of the whole timeline, then its entries in pages.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from api.console.dependencies import ServicesDep, require
from api.console.rendering import render
from api.console.sessions import Session
from config.errors import NotFoundError
from producer.event import ID_PATTERN, MAX_ID_LENGTH
from worker import timeline

router = APIRouter()
IncidentReader = Annotated[Session, require("incidents:read")]
VALID_ID = re.compile(ID_PATTERN)


@router.get("/incidents", response_class=HTMLResponse)
def incidents(
    request: Request, services: ServicesDep, _: IncidentReader,
    incident_id: Annotated[str | None, Query(max_length=2000)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> HTMLResponse:
    """The Incident ID form and, once one is given, its timeline."""
    context: dict[str, Any] = {"title": "Incidents", "section": "incidents",
                               "incident_id": incident_id or "", "problems": [],
                               "entries": None, "summary": None, "next_cursor": None}
    status = 200
    given = (incident_id or "").strip()
    if given and (len(given) > MAX_ID_LENGTH or not VALID_ID.match(given)):
        context["problems"] = [f"Incident ID: {given!r} is not an incident id (letters, "
                               f"digits and . _ : - , at most {MAX_ID_LENGTH} characters)"]
        status = 422
    elif given:
        try:
            entries, summary, next_cursor = timeline.page_with_summary(
                services.redis, services.keys, given, cursor=cursor,
                limit=timeline.PAGE,
                retention_seconds=services.settings.timeline_retention_seconds)
        except NotFoundError as exc:
            context["problems"], status = [str(exc)], 404
        else:
            context.update(entries=entries, summary=summary, next_cursor=next_cursor,
                           incident_id=given)
    return render(request, "incidents.html", context, status=status)
