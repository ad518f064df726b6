"""Signing in with an API token, and signing out.

The sign-in form carries a CSRF token of its own before any session exists (a value also
set in a short-lived cookie: a page elsewhere cannot read it, so it cannot sign a browser
into a session of its choosing). The session cookie is HttpOnly and SameSite=Strict, and
Secure when the console is served over HTTPS.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.console.dependencies import (
    CSRF_FIELD,
    SESSION_COOKIE,
    CheckedForm,
    CsrfRefused,
    FormDep,
    SessionDep,
    StoreDep,
)
from api.console.rendering import render
from config.errors import AuthenticationError

router = APIRouter()

SIGN_IN_COOKIE = "monitao_pd_sign_in"
SIGN_IN_FORM_SECONDS = 3600


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _cookie_options(request: Request, path: str) -> dict[str, object]:
    return {"httponly": True, "samesite": "strict", "path": path or "/",
            "secure": request.url.scheme == "https"}


def safe_next(request: Request, target: str | None) -> str:
    """Where to go after signing in: a path of this console, never another site."""
    root = _root(request)
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return root + "/"
    return target


def _form(request: Request, target: str, problems: list[str], status: int = 200,
          signed_out: bool = False) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = render(request, "sign_in.html", {
        "title": "Sign in", "next": target, "nonce": nonce, "problems": problems,
        "signed_out": signed_out}, status=status)
    response.set_cookie(SIGN_IN_COOKIE, nonce, max_age=SIGN_IN_FORM_SECONDS,
                        **_cookie_options(request, f"{_root(request)}/sign-in"))
    return response


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(request: Request,
                 next: Annotated[str | None, Query(max_length=2000)] = None,
                 signed_out: bool = False) -> HTMLResponse:
    """The sign-in form: a field labelled API token and a Sign in button."""
    return _form(request, safe_next(request, next), [], signed_out=signed_out)


@router.post("/sign-in", response_model=None)
def sign_in(request: Request, form: FormDep, store: StoreDep) -> Response:
    """Start a session for the token given, then go where the form was asked for."""
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    given = form.get(CSRF_FIELD)
    if not expected or not given or not hmac.compare_digest(expected.encode(), given.encode()):
        raise CsrfRefused()
    target = safe_next(request, form.get("next"))
    token = form.get("token")
    if not token:
        return _form(request, target, ["API token: required"], status=422)
    try:
        session_id = store.sign_in(token)
    except AuthenticationError as exc:
        return _form(request, target, [f"API token: {exc}"], status=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, session_id, max_age=int(store.ttl_seconds),
                        **_cookie_options(request, _root(request)))
    response.delete_cookie(SIGN_IN_COOKIE, path=f"{_root(request)}/sign-in", httponly=True,
                           samesite="strict")
    return response


@router.post("/sign-out", response_model=None)
def sign_out(request: Request, session: SessionDep, _: CheckedForm,
             store: StoreDep) -> Response:
    """End the session; its cookie signs nothing in any more."""
    store.sign_out(session)
    response = RedirectResponse(f"{_root(request)}/sign-in?signed_out=true", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=_root(request) or "/",
                           httponly=True, samesite="strict")
    return response
