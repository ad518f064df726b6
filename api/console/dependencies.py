"""What the console's handlers take: the services, the session, the form (CSRF-checked),
and whether htmx asked for a fragment. `Annotated` aliases, as FastAPI's full-stack
template writes them."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, Header, Request

from api.console.sessions import Session, SessionStore
from api.services import Services, get_services
from config.errors import InvalidInputError, PermissionDeniedError
from config.registry import Registry

SESSION_COOKIE = "monitao_pd_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
FORM_TYPE = "application/x-www-form-urlencoded"
# A form's fields at most (a page of dead letters ticked is a few hundred).
MAX_FIELDS = 2000


class NotSignedIn(Exception):
    """The request carries no live session (never signed in, signed out, expired, or its
    token revoked)."""


class CsrfRefused(Exception):
    """A form that changes something came without this session's CSRF token."""


class Form:
    """A posted form's fields (`application/x-www-form-urlencoded`)."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str = "") -> str:
        """The field's first value, stripped, or `default`."""
        values = self._fields.get(name)
        return values[0].strip() if values else default

    def get_list(self, name: str) -> list[str]:
        """Every non-empty value of a repeated field (checkboxes), in order."""
        return [v.strip() for v in self._fields.get(name, []) if v.strip()]

    def optional(self, name: str) -> str | None:
        """The field's value, or None when it is empty or absent."""
        return self.get(name) or None


ServicesDep = Annotated[Services, Depends(get_services)]


def session_store(services: ServicesDep) -> SessionStore:
    """The sessions of this fleet."""
    return SessionStore(services.redis, services.keys)


StoreDep = Annotated[SessionStore, Depends(session_store)]


def current_session(request: Request, store: StoreDep) -> Session:
    """The live session of the request's cookie (and its notice, read once); else
    `NotSignedIn`."""
    session = store.find(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise NotSignedIn()
    request.state.console_session = session
    if request.method == "GET":
        request.state.console_notice = store.take_notice(session)
    return session


SessionDep = Annotated[Session, Depends(current_session)]


def require(scope: str) -> Any:
    """A dependency admitting a session whose token carries `scope`."""

    def allowed(session: SessionDep) -> Session:
        if not session.allows(scope):
            raise PermissionDeniedError(
                f"the token {session.token.name!r} lacks the scope {scope!r}; sign in with a "
                f"token that has it (monitao-pd tokens create --scope {scope} ...)")
        return session

    return Depends(allowed)


async def read_form(request: Request) -> Form:
    """The request's form fields; `InvalidInputError` for another kind of body."""
    body = await request.body()
    if body and request.headers.get("content-type", "").split(";")[0].strip() != FORM_TYPE:
        raise InvalidInputError([f"body: send a form ({FORM_TYPE})"])
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(["body: not UTF-8 text"]) from None
    try:
        return Form(parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FIELDS))
    except ValueError:
        raise InvalidInputError([f"body: more than {MAX_FIELDS} form fields"]) from None


FormDep = Annotated[Form, Depends(read_form)]


def checked_form(request: Request, session: SessionDep, form: FormDep) -> Form:
    """The form, once its CSRF token (field or htmx's header) is the session's; else
    `CsrfRefused`, and nothing changes."""
    given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not session.csrf_matches(given):
        raise CsrfRefused()
    return form


CheckedForm = Annotated[Form, Depends(checked_form)]


def wants_fragment(hx_request: Annotated[str | None, Header()] = None,
                   hx_boosted: Annotated[str | None, Header()] = None) -> bool:
    """Whether htmx asked (for a part of a page, not a boosted whole page)."""
    return hx_request == "true" and hx_boosted != "true"


Fragment = Annotated[bool, Depends(wants_fragment)]


def registry(services: ServicesDep) -> Registry:
    """The destination registry, as the CLI and the API open it (this process's key ring
    seals routing keys; the file's destinations are read-only there)."""
    return services.registry


RegistryDep = Annotated[Registry, Depends(registry)]
