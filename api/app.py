"""The FastAPI app: routers, the problem+json mapping, body limits and metrics.

`create_app(settings)` builds it for given settings (tests, `monitao-pd api`); settings
and the destinations file are read when it is built, so a bad configuration stops the
service at start-up with one line per problem.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from api import console, problems
from api.limits import BodyTooLarge, BodyTooSlow, RequestLimits, too_large, too_slow
from api.metrics import MetricsMiddleware
from api.routers import dead_letters, events, incidents, maintenance, status
from api.routers import destinations as destination_routes
from api.services import Services
from config import defaults
from config.destinations import Destination
from config.settings import Settings, load_settings

DESCRIPTION = """\
The MoniTao PagerDuty fleet, for MoniTao's application in any language: enqueue alert
events, run a destination's send test, read an incident's delivery timeline, list, replay
and purge dead letters, manage maintenance windows, read the fleet's status.

Authenticate with `Authorization: Bearer TOKEN` (`monitao-pd tokens create --name NAME
--scope SCOPE ...`); each endpoint names the scope it needs. Errors are
`application/problem+json` (RFC 9457) with a `problems` list naming each field and reason.
Lists are paged with opaque cursors (`next_cursor`). Bodies over 1 MB are refused (413).
"""


def create_app(settings: Settings | None = None,
               destinations: Mapping[str, Destination] | None = None) -> FastAPI:
    """The API for the fleet that `settings` (default: the environment) describe."""
    services = Services(settings or load_settings(), destinations)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        services.close()

    app = FastAPI(title="monitao-pagerduty", version="1", description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.services = services
    problems.install(app)

    def body_too_large(request: Request, exc: Exception) -> problems.ProblemResponse:
        return too_large(defaults.API_MAX_BODY_BYTES)  # type: ignore[no-any-return]

    def body_too_slow(request: Request, exc: Exception) -> problems.ProblemResponse:
        return too_slow(services.settings.api_body_read_seconds)  # type: ignore[no-any-return]

    app.add_exception_handler(BodyTooLarge, body_too_large)
    app.add_exception_handler(BodyTooSlow, body_too_slow)
    for module in (events, destination_routes, incidents, dead_letters, maintenance, status):
        app.include_router(module.router)
    console.mount(app, services)  # the web console at /, after the API's own routes
    app.add_middleware(RequestLimits, max_body_bytes=defaults.API_MAX_BODY_BYTES,
                       read_timeout=services.settings.api_body_read_seconds)
    app.add_middleware(MetricsMiddleware, metrics=services.metrics)
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problem_media_types(build_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def problem_media_types(document: dict[str, Any]) -> dict[str, Any]:
    """Errors are served as application/problem+json: say so in the document (FastAPI
    files every response model under application/json)."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if problems.MEDIA_TYPE in content and "application/json" in content:
                    content[problems.MEDIA_TYPE] = content.pop("application/json")
    return document
