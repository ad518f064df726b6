"""`/v1/maintenance-windows`: as `monitao-pd maintenance list|add|remove`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.auth import require
from api.models import (
    MaintenanceWindowAdded,
    MaintenanceWindowIn,
    MaintenanceWindowRemoved,
    MaintenanceWindows,
)
from api.routers import problems
from api.services import ServicesDep
from config.tokens import Token
from worker import maintenance_windows

router = APIRouter(prefix="/v1/maintenance-windows", tags=["maintenance windows"])

WindowId = Annotated[str, Path(min_length=1, max_length=128, examples=["db-upgrade"])]


@router.get("", response_model=MaintenanceWindows, responses=problems(),
            summary="List maintenance windows")
def list_windows(services: ServicesDep,
                 _: Annotated[Token, require("status:read")]) -> dict[str, Any]:
    """Configured windows, then run-time ones, each with whether it is active now, how
    many keys a run-time window holds, and how it stands with PagerDuty (`sync`: `synced`,
    `pending`, `failed: why`, `not synced: why`, or null for a destination without REST
    credentials; `pagerduty_window_id`)."""
    return {"windows": maintenance_windows.listing(services.redis, services.keys,
                                                   services.destinations)}


@router.post("", status_code=201, response_model=MaintenanceWindowAdded,
             responses=problems(400, 408, 409, 413), summary="Add a maintenance window")
def add_window(window: MaintenanceWindowIn, services: ServicesDep,
               _: Annotated[Token, require("maintenance:write")]) -> dict[str, Any]:
    """Every worker sees it within `MONITAO_PD_MAINTENANCE_CACHE_SECONDS`. Giving the id of
    a run-time window replaces it (and wakes the keys it held). A window of the whole
    destination is created on its PagerDuty service within about a second when the
    destination has REST credentials, unless `sync` is false."""
    stored, woken = maintenance_windows.add(services.redis, services.keys,
                                            services.destinations, window.model_dump())
    return {"window": maintenance_windows.row(services.redis, services.keys, stored,
                                              destinations=services.destinations),
            "woken": woken}


@router.delete("/{window_id}", response_model=MaintenanceWindowRemoved,
               responses=problems(404, 409), summary="Remove a run-time maintenance window")
def remove_window(window_id: WindowId, services: ServicesDep,
                  _: Annotated[Token, require("maintenance:write")]) -> dict[str, Any]:
    """The keys it held are due at once. A window of the destinations file: 409."""
    woken = maintenance_windows.remove(services.redis, services.keys, services.destinations,
                                       window_id)
    return {"id": window_id, "woken": woken}
