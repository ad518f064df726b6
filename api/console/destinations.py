"""Destinations: the list, Add destination, Edit, Remove (with the pending count) and Send
test, on config/registry.py (as `monitao-pd destinations` and the API) and
producer/send_test.py.

The routing key is a password input, never echoed back, not even into a form shown again
with its problems; records only describe it (length, fingerprint, key id). The send test
page is streamed: each step's outcome shows as it happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, get_args

import redis
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from api.console.dependencies import (
    CheckedForm,
    Form,
    RegistryDep,
    ServicesDep,
    StoreDep,
    require,
)
from api.console.rendering import render, stream
from api.console.sessions import Session
from api.problems import describe
from config import defaults
from config.destinations import DEFAULT_SEVERITY_MAP, Severity
from config.errors import ConfigurationError, ConflictError, InvalidInputError, MonitaoPDError
from config.registry import DestinationRecord
from producer.send_test import SendTest, SendTestRun, Step, start_test

router = APIRouter(prefix="/destinations")
Reader = Annotated[Session, require("destinations:read")]
Writer = Annotated[Session, require("destinations:write")]
Name = Annotated[str, Path(min_length=1, max_length=64)]
LEVELS = tuple(DEFAULT_SEVERITY_MAP)
SEVERITIES = get_args(Severity)
REGIONS = ("us", "eu")
# Fields a form may leave empty to clear the setting (back to its default).
CLEARABLE = ("events_url", "account")


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def parse_settings(form: Form, *, for_update: bool) -> tuple[dict[str, Any], list[str]]:
    """The settings a destination form gives, as the registry takes them, and a problem
    line for each value that is not one."""
    settings: dict[str, Any] = {}
    problems: list[str] = []
    region = form.get("region")
    if region:
        settings["region"] = region
    for name in CLEARABLE:
        value = form.get(name)
        if value:
            settings[name] = value
        elif for_update:
            settings[name] = None  # cleared
    rate = form.get("rate_limit_per_minute")
    if rate:
        try:
            settings["rate_limit_per_minute"] = int(rate)
        except ValueError:
            problems.append(f"rate_limit_per_minute: not a whole number (got {rate!r})")
    severity = {level: form.get(f"severity_{level}") for level in LEVELS
                if form.get(f"severity_{level}")}
    if severity:
        settings["severity_map"] = severity
    return settings, problems


def _form_values(form: Form | None, record: DestinationRecord | None) -> dict[str, Any]:
    """What the form shows: what was posted, else the record's settings (never a key)."""
    if form is not None:
        values = {name: form.get(name) for name in ("name", "region", "account", "events_url",
                                                    "rate_limit_per_minute")}
        values["severity"] = {level: form.get(f"severity_{level}") for level in LEVELS}
        return values
    if record is not None:
        return {"name": record.name, "region": record.region, "account": record.account or "",
                "events_url": record.events_url or "",
                "rate_limit_per_minute": str(record.rate_limit_per_minute),
                "severity": {level: record.severity_map.get(level, "") for level in LEVELS}}
    return {"name": "", "region": "us", "account": "", "events_url": "",
            "rate_limit_per_minute": "", "severity": dict(DEFAULT_SEVERITY_MAP)}


def _form_page(request: Request, *, record: DestinationRecord | None, form: Form | None,
               problems: list[str], status: int = 200) -> HTMLResponse:
    editing = record is not None
    return render(request, "destination_form.html", {
        "title": f"Edit destination {record.name}" if record else "Add destination",
        "section": "destinations", "editing": editing, "record": record,
        "values": _form_values(form, record), "problems": problems, "levels": LEVELS,
        "severities": SEVERITIES, "regions": REGIONS}, status=status)


def _refusal(exc: MonitaoPDError) -> tuple[list[str], int]:
    """A registry's refusal as the form's problem lines and status (as the API answers
    it)."""
    status, detail, problems = describe(exc)
    return problems or [detail], status


@router.get("", response_class=HTMLResponse)
def destination_list(request: Request, registry: RegistryDep, _: Reader,
                     account: Annotated[str | None, Query(max_length=256)] = None,
                     after: Annotated[str | None, Query(max_length=64)] = None) -> HTMLResponse:
    """Every destination, file and registry, a page at a time, in name order."""
    records, next_after = registry.page(account=account or None, after=after or "",
                                        limit=defaults.CONSOLE_PAGE)
    return render(request, "destinations.html", {
        "title": "Destinations", "section": "destinations", "records": records,
        "next_after": next_after, "account": account or ""})


@router.get("/new", response_class=HTMLResponse)
def new_destination(request: Request, _: Writer) -> HTMLResponse:
    """The Add destination form."""
    return _form_page(request, record=None, form=None, problems=[])


@router.post("", response_model=None)
def add_destination(request: Request, registry: RegistryDep, session: Writer,
                    form: CheckedForm, store: StoreDep) -> Response:
    """Add a run-time destination; the form again with every problem if refused."""
    settings, problems = parse_settings(form, for_update=False)
    if problems:
        return _form_page(request, record=None, form=form, problems=problems, status=422)
    try:
        record = registry.add(form.get("name"), settings, form.optional("routing_key"))
    except (InvalidInputError, ConflictError, ConfigurationError) as exc:
        lines, status = _refusal(exc)
        return _form_page(request, record=None, form=form, problems=lines, status=status)
    store.notify(session, f"added destination {record.name}")
    return RedirectResponse(f"{_root(request)}/destinations", status_code=303)


@router.get("/{name}/edit", response_class=HTMLResponse)
def edit_destination(request: Request, name: Name, registry: RegistryDep,
                     _: Writer) -> HTMLResponse:
    """The Edit form, filled with the destination's settings (its key left blank)."""
    return _form_page(request, record=registry.record(name), form=None, problems=[])


@router.post("/{name}", response_model=None)
def update_destination(request: Request, name: Name, registry: RegistryDep, session: Writer,
                       form: CheckedForm, store: StoreDep) -> Response:
    """Change what the form gives (a blank routing key keeps the stored one)."""
    record = registry.record(name)
    settings, problems = parse_settings(form, for_update=True)
    if problems:
        return _form_page(request, record=record, form=form, problems=problems, status=422)
    try:
        registry.update(name, settings, form.optional("routing_key"))
    except (InvalidInputError, ConflictError, ConfigurationError) as exc:
        lines, status = _refusal(exc)
        return _form_page(request, record=record, form=form, problems=lines, status=status)
    store.notify(session, f"changed destination {name}")
    return RedirectResponse(f"{_root(request)}/destinations", status_code=303)


@router.get("/{name}/remove", response_class=HTMLResponse)
def confirm_removal(request: Request, name: Name, registry: RegistryDep,
                    _: Writer) -> HTMLResponse:
    """Ask to confirm, with the events still pending for it (they would be
    dead-lettered as destination_removed)."""
    record = registry.record(name)
    pending = registry.pending_events(name)
    return render(request, "destination_remove.html", {
        "title": f"Remove destination {name}", "section": "destinations", "record": record,
        "pending": sum(pending.values()), "keys_pending": len(pending)})


@router.post("/{name}/remove", response_model=None)
def remove_destination(request: Request, name: Name, registry: RegistryDep, session: Writer,
                       _: CheckedForm, store: StoreDep) -> Response:
    """Remove it, its pending events dead-lettered as destination_removed."""
    removal = registry.remove(name, confirm=True)
    store.notify(session, f"removed destination {name}" + (
        f"; {removal.pending_events} pending event(s) dead-lettered as destination_removed"
        if removal.pending_events else ""))
    return RedirectResponse(f"{_root(request)}/destinations", status_code=303)


@dataclass
class Shown:
    """One line of the send test page: `sent`, `result` (with the step), `failed` (the run
    stopped on an error), or the `verdict` at the end (`SendTest.ok`)."""

    kind: str
    step: Step | None = None
    ok: bool = False
    error: str = ""


def _lines(run: SendTestRun) -> Iterator[Shown]:
    """The run's steps as the page shows them, then its verdict; a failure half-way ends
    the page (its start is already sent)."""
    results = []
    try:
        for step in run.steps():
            if step.result is not None:
                results.append(step.result)
            yield Shown("sent" if step.result is None else "result", step)
    except (MonitaoPDError, redis.RedisError) as exc:
        yield Shown("failed", error=str(exc) or exc.__class__.__name__)
        return
    finally:
        run.close()
    yield Shown("verdict", ok=SendTest(run.destination, run.incident_id, results).ok)


@router.post("/{name}/test", response_model=None)
def send_test(request: Request, name: Name, services: ServicesDep, _: Writer,
              form: CheckedForm) -> Response:
    """Send a test trigger and its resolve through the fleet, each step shown as it
    happens (the page streams)."""
    run = start_test(services.settings, name, timeout=defaults.API_SEND_TEST_TIMEOUT_SECONDS,
                     per_event=False, destinations=services.destinations,
                     producer=services.producer)
    body = stream(request, "send_test.html", {
        "title": f"Send test: {name}", "section": "destinations", "name": name,
        "incident_id": run.incident_id, "lines": _lines(run),
        "timeout": defaults.API_SEND_TEST_TIMEOUT_SECONDS})
    return StreamingResponse(body, media_type="text/html; charset=utf-8")
