"""`POST /v1/destinations/{name}/test`: the "Send test" button, as
`monitao-pd test-destination` (the same `run_test`).

The destinations CRUD endpoints come with the run-time destination registry.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.auth import require
from api.models import SendTestResult
from api.routers import problems
from api.services import ServicesDep
from config import defaults
from config.tokens import Token
from producer.send_test import run_test

router = APIRouter(prefix="/v1/destinations", tags=["destinations"])

Name = Annotated[str, Path(min_length=1, max_length=64, description="a destination's name",
                           examples=["prod"])]


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
