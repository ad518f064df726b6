"""`GET /v1/status` (what `monitao-pd status --json` shows), `GET /healthz` and
`GET /metrics` (these two without a token: probes and Prometheus)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.auth import require
from api.models import FleetStatus, Health
from api.routers import problems
from api.services import ServicesDep
from config.tokens import Token
from worker.fleet_state import DEFAULT_PING_TIMEOUT, fleet_status

router = APIRouter(tags=["status"])


@router.get("/v1/status", response_model=FleetStatus, responses=problems(),
            summary="The fleet on one screen")
def get_status(
    services: ServicesDep, _: Annotated[Token, require("status:read")],
    ping: Annotated[bool, Query(description="ask the workers (a Celery ping)")] = True,
    max_age: Annotated[float | None, Query(
        gt=0, le=10**9, description="seconds; `healthy` is false when the oldest pending "
                                    "event is older (default the status threshold)")] = None,
) -> dict[str, Any]:
    """Workers online, pending events and the age of the oldest, keys due, deliveries in
    flight, dead letters by reason, destinations cooling down, circuits; `healthy` and
    `verdict` as `monitao-pd status` decides them."""
    settings = services.settings
    return fleet_status(
        settings, max_age=max_age or settings.status_max_pending_age_seconds,
        ping_timeout=DEFAULT_PING_TIMEOUT, ping=ping, destinations=services.destinations,
        client=services.redis)


@router.get("/healthz", response_model=Health, summary="Liveness (no token)",
            responses={503: {"model": Health, "description": "Redis does not answer"}})
def healthz(services: ServicesDep) -> JSONResponse:
    """200 when this replica answers and reaches its Redis, else 503. No detail."""
    try:
        services.redis.ping()
    except Exception:  # noqa: BLE001 - any failure is "unavailable", never a detail
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics", summary="Prometheus metrics (no token)", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                             "description": "requests by route and status, and latency"}})
def metrics(services: ServicesDep) -> Response:
    """`monitao_pd_api_requests_total{method, route, status}` and
    `monitao_pd_api_request_duration_seconds{method, route}`, for this replica."""
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
