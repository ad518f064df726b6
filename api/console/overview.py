"""Overview: the fleet on one page, refreshing itself.

`fleet_status` (what `monitao-pd status` and `GET /v1/status` show) and the last hour's
per-minute figures (worker/activity.py), as tiles, a table per destination and two charts
drawn as SVG. htmx swaps the live part in every `CONSOLE_REFRESH_SECONDS`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.console.charts import Y_TICKS as Y_STEPS
from api.console.charts import line_chart
from api.console.dependencies import ServicesDep, require
from api.console.rendering import render
from api.console.sessions import Session
from api.services import Services
from cli.formatting import duration
from config import defaults
from worker import activity
from worker.fleet_state import fleet_status

router = APIRouter()
StatusReader = Annotated[Session, require("status:read")]

OUTCOME_SERIES = (("delivered", "delivered", "s-delivered"),
                  ("retried", "retried", "s-retried"),
                  ("dead-lettered", "dead_lettered", "s-dead"),
                  ("429", "throttled", "s-throttled"))
LATENCY_SERIES = (("p50", 50, "s-p50"), ("p95", 95, "s-p95"), ("p99", 99, "s-p99"))


def _count(value: float) -> str:
    return f"{value:g}"


def _budget(state: dict[str, Any]) -> dict[str, Any]:
    """A destination's row: its budget use as a share of its limit."""
    limit = state.get("rate_limit_per_minute")
    used = state.get("rate_window_requests", 0)
    share = min(1.0, used / limit) if limit else None
    return {**state, "budget_share": share,
            "budget_percent": f"{share * 100:.0f} %" if share is not None else "-"}


def live_context(services: Services) -> dict[str, Any]:
    """Everything the live part shows, read now."""
    settings = services.settings
    status = fleet_status(settings, max_age=settings.status_max_pending_age_seconds,
                          ping_timeout=defaults.CONSOLE_PING_SECONDS,
                          destinations=services.destinations, client=services.redis)
    minutes = activity.last_hour(services.redis, services.keys, status["now_ms"])
    starts = [m.start_ms for m in minutes]
    outcomes = line_chart(
        "Deliveries per minute by outcome, last hour", starts,
        [(name, css, [float(m.counts[field]) for m in minutes])
         for name, field, css in OUTCOME_SERIES], _count, least_top=Y_STEPS)
    latency = line_chart(
        "Enqueue to delivered latency per minute, last hour", starts,
        [(name, css, [m.latency_ms[p] for m in minutes]) for name, p, css in LATENCY_SERIES],
        duration)
    return {
        "status": status,
        "destinations": [_budget(state) for _, state in sorted(status["destinations"].items())],
        "charts": [outcomes, latency],
        "refresh_seconds": defaults.CONSOLE_REFRESH_SECONDS,
        "window_seconds": settings.rate_window_seconds,
    }


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, services: ServicesDep, _: StatusReader) -> HTMLResponse:
    """The overview page."""
    return render(request, "overview.html", {"title": "Overview", "section": "overview",
                                             **live_context(services)})


@router.get("/overview/live", response_class=HTMLResponse)
def overview_live(request: Request, services: ServicesDep, _: StatusReader) -> HTMLResponse:
    """The live part alone, for htmx to swap in."""
    return render(request, "_overview_live.html", live_context(services))
