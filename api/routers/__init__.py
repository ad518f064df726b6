"""One router per resource of the API; each handler parses, calls one shared function,
and returns its record."""

from __future__ import annotations

from typing import Any

from api.models import Problem

DESCRIPTIONS = {
    400: "the request body cannot be read (not text, or not JSON)",
    401: "no token, or an unknown or revoked one",
    403: "the token lacks the scope this endpoint needs",
    404: "no such resource",
    408: "the request body did not arrive in time",
    409: "the resource's state refuses the request",
    413: "the request body is over 1 MB",
    422: "invalid input: `problems` names each field and reason",
    503: "Redis did not answer, or the service's configuration is invalid",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of an endpoint for these error statuses, and 401/403/422/503 that
    every authenticated endpoint can answer."""
    chosen = sorted({401, 403, 422, 503, *statuses})
    return {status: {"model": Problem, "description": DESCRIPTIONS[status],
                     "content": {"application/problem+json": {}}} for status in chosen}
