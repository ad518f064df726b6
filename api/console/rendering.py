"""Pages from Jinja2 templates: the environment, its filters, and the page response.

Every value a template prints goes through `config.text.printable` (the environment's
`finalize`) before HTML escaping: a control character in a stored or received value is
shown escaped (`\\x1b`), as the CLI shows it. Templates format what handlers give them
and switch on codes; they never count or decide.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from cli.formatting import duration
from config.text import printable

TEMPLATES = Path(__file__).parent / "templates"
NAVIGATION = (
    ("overview", "Overview", "/"),
    ("incidents", "Incidents", "/incidents"),
    ("dead_letters", "Dead letters", "/dead-letters"),
    ("destinations", "Destinations", "/destinations"),
    ("maintenance", "Maintenance", "/maintenance"),
)


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return printable(value)


def moment(value: Any) -> str:
    """An ISO 8601 time or epoch milliseconds as `2026-12-03 10:15:02 UTC`."""
    if value in (None, ""):
        return "-"
    try:
        if isinstance(value, int | float) or str(value).isdigit():
            when = datetime.fromtimestamp(float(value) / 1000, UTC)
        else:
            when = datetime.fromisoformat(str(value))
    except (TypeError, ValueError, OverflowError):
        return str(value)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short_id(value: Any, length: int = 12) -> str:
    """An event id as tables show it (any unique prefix of 8+ characters names it)."""
    text = str(value or "")
    return text if len(text) <= length else text[:length]


def seconds(value: Any) -> str:
    """A duration in seconds for people (`4.2 s`, `3 min 5 s`), `-` for none."""
    return "-" if value is None else duration(float(value) * 1000)


STAGE_NAMES = {"pagerduty_acknowledged": "PagerDuty acknowledged",
               "pagerduty_resolved": "PagerDuty resolved",
               "pagerduty_triggered": "PagerDuty triggered"}


def stage_name(stage: Any) -> str:
    """A timeline stage for people: `retry_scheduled` as `Retry scheduled`."""
    text = str(stage or "")
    if text in STAGE_NAMES:
        return STAGE_NAMES[text]
    if text.startswith("pagerduty_"):
        return "PagerDuty " + text.removeprefix("pagerduty_").replace("_", " ")
    return text.replace("_", " ").capitalize()


def as_list(value: Any) -> list[Any]:
    """A value that is a list, or one item (PagerDuty's `errors` kept as text)."""
    return list(value) if isinstance(value, list | tuple) else [value]


def pretty_json(value: Any) -> Markup:
    """A JSON value laid out for reading: its lines kept, each escaped as any other text
    is (JSON escapes the C0 controls inside strings; `printable` the rest)."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return Markup("\n").join(escape(printable(line)) for line in text.split("\n"))


def build_environment() -> Environment:
    """The console's template environment."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(
        default=True, default_for_string=True),
        finalize=_finalize, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(duration=duration, moment=moment, short_id=short_id, seconds=seconds,
                       pretty_json=pretty_json, stage_name=stage_name, as_list=as_list)
    env.globals.update(navigation=NAVIGATION)
    return env


ENVIRONMENT = build_environment()
SECURITY_HEADERS = {
    # nothing from elsewhere, no inline script or style, never framed
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def base_context(request: Request) -> dict[str, Any]:
    """What every template may use: the request, the session (or None), its CSRF token,
    the page's notice, and `root` (where the console is mounted)."""
    state = request.state
    session = getattr(state, "console_session", None)
    return {"request": request, "session": session,
            "csrf": session.csrf if session is not None else "",
            "notice": getattr(state, "console_notice", None),
            "root": request.scope.get("root_path", "").rstrip("/"),
            "section": None}


def render(request: Request, template: str, context: dict[str, Any] | None = None, *,
           status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    """The page (or fragment) `template` with `context`, as an HTML response."""
    page = ENVIRONMENT.get_template(template).render({**base_context(request), **(context or {})})
    return HTMLResponse(page, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def stream(request: Request, template: str, context: dict[str, Any]) -> Any:
    """`template` rendered piece by piece as its loops advance (a send test's steps)."""
    return ENVIRONMENT.get_template(template).generate({**base_context(request), **context})
