"""The web console: the fleet's pages for on-call and support engineers, at `/` of
`monitao-pd api`.

A sub-app of its own (its routers, its error pages, its static files), mounted on the API's
app by `mount()`; it answers only the paths it serves, so every other path keeps the API's
answers (problem+json 404 and 405). Its handlers parse a form or query, call the same
functions the CLI and the HTTP API call (config/registry.py, producer/send_test.py,
worker/dead_letters.py, worker/replay_request.py, worker/timeline.py, worker/fleet_state.py,
worker/maintenance_windows.py, worker/activity.py), and render what they return with
Jinja2 templates; htmx (vendored, api/console/static) swaps in the parts that refresh.

Signing in takes an API token (api/console/sessions.py); the session has the token's scopes,
and each page names the scope it needs, as the API's endpoints do.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.console import dead_letters, destinations, errors, incidents, maintenance, overview
from api.console import sign_in as sign_in_pages
from api.console.rendering import SECURITY_HEADERS
from api.services import Services

STATIC = Path(__file__).parent / "static"
STATIC_CACHE_SECONDS = 3600


class SecurityHeaders:
    """Adds the console's security headers to every answer that lacks them (static files
    may be cached for an hour; pages never are)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith(f"{scope.get('root_path', '')}/static/")
        extra = dict(SECURITY_HEADERS)
        if static:
            extra["Cache-Control"] = f"max-age={STATIC_CACHE_SECONDS}"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((name.lower().encode(), value.encode()) for name, value in extra.items()
                      if name.lower().encode() not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_console(services: Services) -> FastAPI:
    """The console's app over the API's `services`."""
    console = FastAPI(title="monitao-pagerduty console", docs_url=None, redoc_url=None,
                      openapi_url=None)
    console.state.services = services
    errors.install(console)
    for module in (sign_in_pages, overview, incidents, dead_letters, destinations, maintenance):
        console.include_router(module.router)
    console.mount("/static", StaticFiles(directory=STATIC), name="static")
    console.add_middleware(SecurityHeaders)
    return console


class ConsoleMount(Mount):
    """A mount at `/` that matches only the paths its app serves, so the routes mounted
    beside it (the API's) keep their own not-found and method-not-allowed answers."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is Match.NONE:
            return match, child_scope
        inner = {**scope, **child_scope}
        if any(route.matches(inner)[0] is not Match.NONE for route in self.routes):
            return match, child_scope
        return Match.NONE, {}


def mount(app: FastAPI, services: Services) -> None:
    """Serve the console at `/` of `app` (after its own routes, which come first)."""
    app.router.routes.append(ConsoleMount("/", create_console(services), name="console"))
