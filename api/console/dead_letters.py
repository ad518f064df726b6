"""Dead letters: `dlq list` with its filters, `dlq show`, replay (a preview first: the dry
run's decisions) and purge (after a confirmation), on the functions the CLI and the API
call: worker/dead_letters.py and worker/replay_request.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.console.dependencies import CheckedForm, Fragment, ServicesDep, StoreDep, require
from api.console.rendering import render
from api.console.sessions import Session
from config import defaults
from config.errors import InvalidInputError
from worker import dead_letters
from worker.replay_request import replay_dead_letters

router = APIRouter(prefix="/dead-letters")
Reader = Annotated[Session, require("dead-letters:read")]
Writer = Annotated[Session, require("dead-letters:write")]
Text = Annotated[str | None, Query(max_length=256)]
EventId = Annotated[str, Path(min_length=1, max_length=128)]
FILTERS = ("destination", "reason", "since", "until")


def operator(session: Session) -> str:
    """How a change made from the console names who made it (timeline `operator`)."""
    return f"console:{session.token.name}"


def _millis(name: str, value: str | None, problems: list[str]) -> int | None:
    """A form's date and time (UTC unless it says otherwise) as epoch milliseconds."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        problems.append(f"{name}: not a date and time (got {value!r})")
        return None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def parse_filters(given: dict[str, str | None]) -> tuple[dead_letters.Filters, list[str]]:
    """The filters a query gives, and a problem line for each value that is not one."""
    problems: list[str] = []
    since = _millis("since", given.get("since"), problems)
    until = _millis("until", given.get("until"), problems)
    try:
        filters = dead_letters.Filters(destination=given.get("destination") or None,
                                       reason=given.get("reason") or None,
                                       since_ms=since, until_ms=until)
    except InvalidInputError as exc:
        problems.extend(exc.problems)
        filters = dead_letters.Filters(destination=given.get("destination") or None,
                                       reason=given.get("reason") or None)
    return filters, problems


def listing(services: Any, given: dict[str, str | None], cursor: str | None) -> dict[str, Any]:
    """The page's list: one page of dead letters matching the filters, and the counts."""
    filters, problems = parse_filters(given)
    letters, next_cursor = dead_letters.page(services.redis, services.keys, filters,
                                             cursor=cursor, limit=defaults.CONSOLE_PAGE)
    counts = dead_letters.counts_by_reason(services.redis, services.keys, filters)
    return {"letters": letters, "next_cursor": next_cursor, "counts": counts,
            "filters": {name: given.get(name) or "" for name in FILTERS},
            "problems": problems, "filtered": filters != dead_letters.Filters()}


@router.get("", response_class=HTMLResponse)
def dead_letter_list(request: Request, services: ServicesDep, _: Reader,
                     destination: Text = None, reason: Text = None, since: Text = None,
                     until: Text = None,
                     cursor: Annotated[str | None, Query(max_length=512)] = None,
                     ) -> HTMLResponse:
    """Dead letters matching the filters, a checkbox each, oldest first."""
    context = listing(services, {"destination": destination, "reason": reason,
                                 "since": since, "until": until}, cursor)
    return render(request, "dead_letters.html",
                  {"title": "Dead letters", "section": "dead_letters", "report": None,
                   **context}, status=422 if context["problems"] else 200)


def _selected(form: Any) -> list[str]:
    ids = form.get_list("event_id")
    if not ids:
        raise InvalidInputError(["selection: tick at least one dead letter"])
    return ids


@router.post("/replay", response_class=HTMLResponse)
def replay(request: Request, services: ServicesDep, session: Writer, form: CheckedForm,
           fragment: Fragment) -> HTMLResponse:
    """Preview (the dry run) or replay the ticked dead letters: each one's decision."""
    preview = form.get("mode") != "replay"
    report = replay_dead_letters(services.redis, services.settings,
                                 event_ids=_selected(form), dry_run=preview,
                                 operator=operator(session))
    context = {"report": report, "preview": preview}
    if fragment:
        return render(request, "_replay_result.html", context)
    page = listing(services, {}, None)
    return render(request, "dead_letters.html", {
        "title": "Dead letters", "section": "dead_letters", **page, **context})


@router.post("/purge", response_model=None)
def purge(request: Request, services: ServicesDep, session: Writer, form: CheckedForm,
          store: StoreDep) -> Response:
    """Ask to confirm purging the ticked dead letters; purge them once confirmed."""
    ids = _selected(form)
    if form.get("confirm") != "yes":
        letters = dead_letters.purge_candidates(services.redis, services.keys, event_ids=ids)
        return render(request, "purge_confirm.html", {
            "title": "Purge dead letters", "section": "dead_letters", "letters": letters})
    outcomes = dead_letters.purge_selection(services.redis, services.keys, services.settings,
                                            event_ids=ids, operator=operator(session))
    purged = sum(outcome == "purged" for outcome in outcomes.values())
    left = len(outcomes) - purged
    store.notify(session, f"purged {purged} dead letter(s)" + (
        f"; {left} left alone (replayed or gone meanwhile)" if left else ""))
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return RedirectResponse(f"{root}/dead-letters", status_code=303)


@router.get("/{event_id}", response_class=HTMLResponse)
def dead_letter(request: Request, event_id: EventId, services: ServicesDep,
                _: Reader) -> HTMLResponse:
    """One dead letter as `dlq show` tells it."""
    letter = dead_letters.show(services.redis, services.keys, event_id, services.destinations,
                               retention_seconds=services.settings.timeline_retention_seconds)
    return render(request, "dead_letter.html", {
        "title": f"Dead letter {letter['event_id'][:12]}", "section": "dead_letters",
        "letter": letter})
