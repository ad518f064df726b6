"""Errors as RFC 9457 `application/problem+json`, with a `problems` list of `field: reason`.

Services raise the project's errors (`config/errors.py`); this is the API's one mapping of
them to statuses, as `cli/main.py` maps them to exit codes. No handler raises an HTTP
error of its own.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from config.errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    MonitaoPDError,
    NotFoundError,
    PermissionDeniedError,
    RedisUnavailableError,
)

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 408: "Request timeout", 409: "Conflict",
    413: "Content too large", 415: "Unsupported media type", 422: "Invalid input",
    500: "Internal error", 503: "Service unavailable",
}


class ProblemResponse(JSONResponse):
    """A JSON response served as application/problem+json."""

    media_type = MEDIA_TYPE


def problem(status: int, detail: str, problems: list[str] | None = None,
            headers: dict[str, str] | None = None) -> ProblemResponse:
    """A problem+json response: type, title, status, detail and the `problems` list."""
    body: dict[str, Any] = {
        "type": "about:blank", "title": TITLES.get(status, "Error"), "status": status,
        "detail": detail, "problems": problems if problems is not None else [detail],
    }
    return ProblemResponse(body, status_code=status, headers=headers)


def status_of(exc: MonitaoPDError) -> int:
    """The HTTP status for a project error."""
    if isinstance(exc, PermissionDeniedError):
        return 403
    if isinstance(exc, AuthenticationError):
        return 401
    if isinstance(exc, InvalidInputError):
        return 422
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    return 503  # RedisUnavailableError, ConfigurationError: the service cannot answer now


def describe(exc: MonitaoPDError) -> tuple[int, str, list[str] | None]:
    """A project error as every door answers it: the HTTP status, the detail and the
    problems (one per line, for invalid input and configuration)."""
    if isinstance(exc, InvalidInputError):
        return status_of(exc), exc.summary, exc.problems
    if isinstance(exc, ConfigurationError):
        return status_of(exc), "the service's configuration is invalid", exc.problems
    return status_of(exc), str(exc), None


def _project_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, MonitaoPDError)
    status, detail, problems = describe(exc)
    if status == 503:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return problem(status, detail, problems, headers)


def _redis_error(request: Request, exc: Exception) -> ProblemResponse:
    log.warning("%s %s: Redis failed (%s)", request.method, request.url.path,
                exc.__class__.__name__)
    return problem(503, "the fleet's Redis did not answer; try again",
                   [f"redis: {exc.__class__.__name__}"])


def _validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    return problem(422, "invalid input", describe_request_errors(exc.errors()))


def _http_error(request: Request, exc: Exception) -> ProblemResponse:
    # Starlette's own refusals (404 and 405 of the router) and FastAPI's 400 for a body
    # it cannot decode; nothing of ours raises them.
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        return problem(400, "the request body cannot be read",
                       ["body: cannot be read as JSON text"])
    return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


def _unexpected(request: Request, exc: Exception) -> ProblemResponse:
    log.error("%s %s failed: %s", request.method, request.url.path, exc.__class__.__name__,
              exc_info=exc)
    return problem(500, "internal error; the service logged it")


def describe_request_errors(errors: Any) -> list[str]:
    """One `field: reason (got value)` line per invalid parameter or body field."""
    lines = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        field = ".".join(loc) or "body"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        value = error.get("input")
        # A whole body is never echoed: a bare JSON string there may be a routing key.
        hidden = error.get("type") == "missing" or not loc or isinstance(value, dict | list)
        shown = "" if hidden else f" (got {_short(value)})"
        lines.append(f"{field}: {message}{shown}")
    return lines


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def install(app: FastAPI) -> None:
    """Register the mapping on `app`."""
    app.add_exception_handler(MonitaoPDError, _project_error)
    app.add_exception_handler(RedisUnavailableError, _project_error)
    app.add_exception_handler(redis.RedisError, _redis_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
