"""`/v1/destinations`: list, add, show, change and remove destinations, as
`monitao-pd destinations list|add|show|update|remove` (the same `Registry` calls), and
`POST /v1/destinations/{name}/test`: the "Send test" button, as `monitao-pd
test-destination` (the same `run_test`).

The routing key is write-only: accepted by POST and PATCH, stored sealed, and only
described in every answer. The destinations file's are listed (`read_only`) and refused
with 409 by PATCH and DELETE.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from api.auth import require
from api.models import DestinationChanges, NewDestination, SendTestResult
from api.routers import problems
from api.routers.incidents import Cursor, Limit
from api.services import ServicesDep
from config import defaults
from config.registry import (
    DestinationDetail,
    DestinationPage,
    DestinationRecord,
    Removal,
)
from config.tokens import Token
from producer.send_test import run_test

router = APIRouter(prefix="/v1/destinations", tags=["destinations"])

Name = Annotated[str, Path(min_length=1, max_length=64, description="a destination's name",
                           examples=["prod"])]
Account = Annotated[str | None, Query(max_length=64, description="only this account's")]


@router.get("", response_model=DestinationPage, responses=problems(),
            summary="List destinations (in name order, in pages)")
def list_destinations(services: ServicesDep,
                      _: Annotated[Token, require("destinations:read")],
                      account: Account = None, cursor: Cursor = None,
                      limit: Limit = defaults.API_PAGE_DEFAULT) -> DestinationPage:
    """The destinations file's (`read_only`) and the registry's together, routing keys
    described, never shown, as `monitao-pd destinations list --json`."""
    return services.registry.listing(account=account, cursor=cursor, limit=limit)


@router.post("", status_code=201, response_model=DestinationRecord,
             responses=problems(400, 408, 409, 413),
             summary="Add a run-time destination")
def add_destination(body: NewDestination, response: Response,  # type: ignore[valid-type]
                    services: ServicesDep,
                    _: Annotated[Token, require("destinations:write")]) -> DestinationRecord:
    """Stored in Redis, its routing key sealed with the key ring; every worker delivers to
    it at once. A name taken (here or in the destinations file): 409. This service without
    `MONITAO_PD_SECRET_KEYS`: 503 (it cannot seal the key; nothing is stored)."""
    given = body.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
    name, routing_key = given.pop("name", None), given.pop("routing_key", None)
    record = services.registry.add(name, given, routing_key,
                                   given.pop("pagerduty_api_token", None))
    response.headers["Location"] = f"{router.prefix}/{record.name}"
    return record


@router.get("/{name}", response_model=DestinationDetail, responses=problems(404),
            summary="Show a destination and its figures now")
def show_destination(name: Name, services: ServicesDep,
                     _: Annotated[Token, require("destinations:read")]) -> DestinationDetail:
    """Its settings, its routing key described, and now: pending events, rate budget use,
    429 cooldown, circuit, dead letters by reason (`monitao-pd destinations show --json`)."""
    return services.registry.detail(name)


@router.patch("/{name}", response_model=DestinationRecord,
              responses=problems(400, 404, 408, 409, 413),
              summary="Change what is given of a run-time destination")
def change_destination(name: Name, body: DestinationChanges,  # type: ignore[valid-type]
                       services: ServicesDep,
                       _: Annotated[Token, require("destinations:write")]) -> DestinationRecord:
    """Only what is given changes (`monitao-pd destinations update`); every worker uses the
    change within 2 s. A destination of the file: 409. A new routing key without
    `MONITAO_PD_SECRET_KEYS` on this service: 503."""
    given = body.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
    routing_key = given.pop("routing_key", None)
    return services.registry.update(name, given, routing_key,
                                    given.pop("pagerduty_api_token", None))


@router.delete("/{name}", response_model=Removal, responses=problems(404, 409),
               summary="Remove a run-time destination")
def remove_destination(
    name: Name, services: ServicesDep, _: Annotated[Token, require("destinations:write")],
    force: Annotated[bool, Query(description="remove it even with pending events")] = False,
) -> Removal:
    """With pending events and no `force`: 409 naming how many, nothing removed; with
    `force` they end `dead_lettered` (`destination_removed`) at once, and a replay delivers
    them once a destination of that name is added again. Its rate budget, cooldown,
    maintenance windows (and its endpoint's circuit, when no other destination uses it) go
    too. A destination of the file: 409."""
    return services.registry.remove(name, confirm=force)


@router.post("/{name}/test", response_model=SendTestResult, responses=problems(404),
             summary="Send a test trigger and its resolve through the fleet")
def send_test(
    name: Name, services: ServicesDep, _: Annotated[Token, require("destinations:write")],
    timeout: Annotated[float, Query(
        gt=0, le=defaults.API_SEND_TEST_MAX_TIMEOUT_SECONDS,
        description="seconds for both events to reach a final state")
    ] = defaults.API_SEND_TEST_TIMEOUT_SECONDS,
    level: Annotated[str | None, Query(
        max_length=64, description="MoniTao level of the trigger (default: the gentlest)")
    ] = None,
) -> dict[str, Any]:
    """A trigger at the destination's least severe level, then its resolve, under a
    dedup_key of their own, through the producer, Redis, a worker and PagerDuty. Answers
    within `timeout` with each step's outcome (`delivered`, `dead_lettered` with PagerDuty's
    errors, or `pending`): `ok` is true only when both were delivered."""
    return run_test(services.settings, name, timeout=timeout, level=level, per_event=False,
                    destinations=services.destinations, producer=services.producer).as_dict()
