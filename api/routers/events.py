"""`POST /v1/events` and `POST /v1/events/batch`: enqueue exactly as `send()` and
`send_many()` do (the same validation, the same idempotency by `event_id`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api.auth import require
from api.models import BatchAccepted, EventAccepted
from api.routers import problems
from api.services import ServicesDep
from config import defaults
from config.errors import InvalidInputError
from config.tokens import Token
from producer.event import AlertEvent

router = APIRouter(prefix="/v1", tags=["events"])

EXAMPLE_EVENT = {
    "event_id": "4b1f0f6c2a6e4d0e9f1d2c3b4a596877", "destination": "prod",
    "action": "trigger", "monitor_id": "123", "incident_id": "456",
    "summary": "[DOWN] example.com - HTTP 503", "level": "critical",
    "monitor_name": "example.com", "url": "https://example.com", "status_code": 503,
    "response_time_ms": 1234, "check_location": "eu-west",
    "incident_url": "https://monitao.example/incidents/456",
}
EVENT_SCHEMA = AlertEvent.model_json_schema()
BATCH_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["events"],
    "properties": {"events": {"type": "array", "items": EVENT_SCHEMA,
                              "maxItems": defaults.API_MAX_BATCH}},
}


def _body(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": schema, "examples": {"example": {"value": example}}}}}}


async def read_json(request: Request) -> Any:
    """The request body as JSON; `InvalidInputError` when it is not."""
    body = await request.body()
    try:
        return json.loads(body)
    except RecursionError:
        raise InvalidInputError(["body: JSON nested too deeply"]) from None
    except ValueError as exc:
        raise InvalidInputError([f"body: not valid JSON ({exc})"]) from None


@router.post("/events", status_code=202, response_model=EventAccepted,
             responses=problems(400, 408, 413), openapi_extra=_body(EVENT_SCHEMA, EXAMPLE_EVENT),
             summary="Enqueue one alert event")
async def post_event(request: Request, services: ServicesDep,
                     _: Annotated[Token, require("events:write")]) -> EventAccepted:
    """Validate and store one event, as `AlertProducer.send()`; answers once it is in
    Redis. An `event_id` already accepted is a no-op answering the same id."""
    event = await read_json(request)
    return EventAccepted(event_id=await run_in_threadpool(services.producer.send, event))


@router.post("/events/batch", status_code=202, response_model=BatchAccepted,
             responses=problems(400, 408, 413),
             openapi_extra=_body(BATCH_SCHEMA, {"events": [EXAMPLE_EVENT]}),
             summary="Enqueue up to 500 alert events, all or nothing")
async def post_batch(request: Request, services: ServicesDep,
                     _: Annotated[Token, require("events:write")]) -> BatchAccepted:
    """Validate every event first (nothing is stored if one is invalid: `problems` names
    each with its position), then store them all in one round trip, as `send_many()`."""
    body = await read_json(request)
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        raise InvalidInputError(['events: required, a list of events ({"events": [...]})'])
    extra = sorted(set(body) - {"events"})
    if extra:
        raise InvalidInputError([f"{name}: unknown field" for name in extra])
    if len(events) > defaults.API_MAX_BATCH:
        raise InvalidInputError([f"events: at most {defaults.API_MAX_BATCH} per batch "
                                 f"(got {len(events)})"])
    return BatchAccepted(event_ids=await run_in_threadpool(services.producer.send_many, events))
