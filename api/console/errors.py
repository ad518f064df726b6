"""The console's one mapping of errors to pages, as `api/problems.py` is the API's.

Services raise the project's errors (`config/errors.py`); here they become an error page
(or, for htmx, the fragment swapped in where the answer was expected) with the same
problem lines the CLI and the API give. Not signed in: a page is redirected to the sign-in
form, and anything else (a form posted, htmx) is refused with 401.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.console.dependencies import CsrfRefused, NotSignedIn
from api.console.rendering import SECURITY_HEADERS, render
from api.limits import BodyTooLarge, BodyTooSlow
from api.problems import TITLES, describe, describe_request_errors
from config.errors import (
    MonitaoPDError,
    RedisUnavailableError,
)

log = logging.getLogger(__name__)


def error_page(request: Request, status: int, detail: str,
               problems: list[str] | None = None) -> HTMLResponse:
    """The error page (or fragment, for htmx) with `detail` and one line per problem."""
    fragment = request.headers.get("HX-Request") == "true"
    return render(request, "_error.html" if fragment else "error.html",
                  {"status": status, "title": TITLES.get(status, "Error"), "detail": detail,
                   "problems": problems or []}, status=status)


def _not_signed_in(request: Request, exc: Exception) -> HTMLResponse | RedirectResponse:
    if request.headers.get("HX-Request") == "true":
        response = error_page(request, 401, "your session ended; sign in again")
        response.headers["HX-Redirect"] = f"{_root(request)}/sign-in"
        return response
    if request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{_root(request)}/sign-in?next={quote(target, safe='')}",
                                status_code=303, headers=SECURITY_HEADERS)
    return error_page(request, 401, "not signed in: sign in with an API token first")


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _csrf_refused(request: Request, exc: Exception) -> HTMLResponse:
    return error_page(request, 403, "refused: the form came without this session's CSRF "
                                    "token (reload the page and try again); nothing changed")


def _project_error(request: Request, exc: Exception) -> HTMLResponse:
    assert isinstance(exc, MonitaoPDError)
    status, detail, problems = describe(exc)
    if status == 503:
        log.warning("console %s %s: %s", request.method, request.url.path, exc)
    return error_page(request, status, detail, problems)


def _redis_error(request: Request, exc: Exception) -> HTMLResponse:
    log.warning("console %s %s: Redis failed (%s)", request.method, request.url.path,
                exc.__class__.__name__)
    return error_page(request, 503, "the fleet's Redis did not answer; try again",
                      [f"redis: {exc.__class__.__name__}"])


def _validation_error(request: Request, exc: Exception) -> HTMLResponse:
    assert isinstance(exc, RequestValidationError)
    return error_page(request, 422, "invalid input", describe_request_errors(exc.errors()))


def _http_error(request: Request, exc: Exception) -> HTMLResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_page(request, exc.status_code, str(exc.detail))


def _body_too_large(request: Request, exc: Exception) -> HTMLResponse:
    return error_page(request, 413, "the form is too large")


def _body_too_slow(request: Request, exc: Exception) -> HTMLResponse:
    return error_page(request, 408, "the form did not arrive in time")


class UnexpectedErrors:
    """Answers a failure no handler maps with the 500 page, logged, and lets it go no
    further: the console's mistakes never reach the API's app around it. A page already
    under way (a streamed send test) is ended where it stands."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = finished = False

        async def tracking(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:  # the last resort: a page, never a traceback
            log.error("console %s %s failed: %s", scope.get("method"), scope.get("path"),
                      exc.__class__.__name__, exc_info=exc)
            if not started:
                response = error_page(Request(scope), 500,
                                      "internal error; the service logged it")
                await response(scope, receive, send)
            elif not finished:
                await send({"type": "http.response.body", "body": b"", "more_body": False})


def install(app: FastAPI) -> None:
    """Register the mapping on the console's app."""
    app.add_exception_handler(NotSignedIn, _not_signed_in)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(MonitaoPDError, _project_error)
    app.add_exception_handler(RedisUnavailableError, _project_error)
    app.add_exception_handler(redis.RedisError, _redis_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(BodyTooLarge, _body_too_large)
    app.add_exception_handler(BodyTooSlow, _body_too_slow)
    app.add_middleware(UnexpectedErrors)
