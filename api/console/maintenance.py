"""Maintenance: the windows (which are active now), Add window and Remove, on
worker/maintenance_windows.py as `monitao-pd maintenance` and the API call it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.console.dependencies import CheckedForm, Form, ServicesDep, StoreDep, require
from api.console.rendering import render
from api.console.sessions import Session
from api.services import Services
from config.errors import ConflictError, InvalidInputError
from worker import maintenance_windows

router = APIRouter(prefix="/maintenance")
Reader = Annotated[Session, require("status:read")]
Writer = Annotated[Session, require("maintenance:write")]
WindowId = Annotated[str, Path(min_length=1, max_length=128)]
FIELDS = ("destination", "monitors", "start", "end", "weekly", "mode", "reason", "id",
          "no_sync")


def window_fields(form: Form) -> dict[str, Any]:
    """The window a form describes, as `maintenance_windows.add` takes it (times without
    an offset are UTC; monitors comma-separated; `no_sync` checked: not sent to PagerDuty)."""
    monitors = [m.strip() for m in form.get("monitors").split(",") if m.strip()]
    return {"destination": form.get("destination"), "monitors": monitors,
            "start": form.optional("start"), "end": form.optional("end"),
            "weekly": form.optional("weekly"), "mode": form.get("mode") or "suppress",
            "reason": form.get("reason"), "id": form.optional("id"),
            "sync": not form.get("no_sync")}


def _page(request: Request, services: Services, *, form: Form | None = None,
          problems: list[str] | None = None, status: int = 200) -> HTMLResponse:
    windows = maintenance_windows.listing(services.redis, services.keys, services.destinations)
    values = {name: form.get(name) if form is not None else "" for name in FIELDS}
    return render(request, "maintenance.html", {
        "title": "Maintenance", "section": "maintenance", "windows": windows,
        "values": values, "problems": problems or []}, status=status)


@router.get("", response_class=HTMLResponse)
def maintenance_page(request: Request, services: ServicesDep, _: Reader) -> HTMLResponse:
    """Every window, configured then run-time, and the Add window form."""
    return _page(request, services)


@router.post("", response_model=None)
def add_window(request: Request, services: ServicesDep, session: Writer, form: CheckedForm,
               store: StoreDep) -> Response:
    """Add a run-time window (its id given: replace that window)."""
    try:
        window, woken = maintenance_windows.add(services.redis, services.keys,
                                                services.destinations, window_fields(form))
    except InvalidInputError as exc:
        return _page(request, services, form=form, problems=exc.problems, status=422)
    except ConflictError as exc:
        return _page(request, services, form=form, problems=[str(exc)], status=409)
    store.notify(session, f"added maintenance window {window.id} ({window.describe()})"
                 + (f"; {woken} held key(s) woken" if woken else ""))
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return RedirectResponse(f"{root}/maintenance", status_code=303)


@router.post("/{window_id}/remove", response_model=None)
def remove_window(request: Request, window_id: WindowId, services: ServicesDep,
                  session: Writer, _: CheckedForm, store: StoreDep) -> Response:
    """Remove a run-time window; the keys it held are due at once."""
    woken = maintenance_windows.remove(services.redis, services.keys, services.destinations,
                                       window_id)
    store.notify(session, f"removed maintenance window {window_id}"
                 + (f"; {woken} held key(s) woken" if woken else ""))
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return RedirectResponse(f"{root}/maintenance", status_code=303)
