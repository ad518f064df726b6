"""The console over plain HTTP (no browser needed): it answers only its own paths, so the
API keeps its problem+json answers; its pages carry the security headers; the vendored
JavaScript names its version and licence and nothing comes from elsewhere; the session
cookie's attributes; secrets never reach a page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from api.console import STATIC
from api.server import ApiService
from config import tokens
from config.destinations import Destination
from config.keyspace import Keyspace
from config.settings import Settings

TEMPLATES = Path(STATIC).parent / "templates"


@pytest.fixture
def api(settings: Settings, destinations: dict[str, Destination]) -> Iterator[ApiService]:
    with ApiService(settings, destinations) as service:
        yield service


def sign_in(http: httpx.Client, token: str) -> httpx.Response:
    form = http.get("/sign-in")
    nonce = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    return http.post("/sign-in", data={"csrf_token": nonce, "token": token, "next": "/"})


def test_the_api_keeps_its_own_answers_beside_the_console(api: ApiService) -> None:
    with httpx.Client(base_url=api.url) as http:
        unknown = http.get("/v1/no-such-thing")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        wrong_method = http.post("/v1/status")
        assert wrong_method.status_code == 405
        assert wrong_method.headers["content-type"] == "application/problem+json"
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/openapi.json").status_code == 200
        assert not [p for p in http.get("/openapi.json").json()["paths"]
                    if not p.startswith(("/v1/", "/healthz", "/metrics"))]  # no pages in it
        page = http.get("/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/sign-in?next=%2F"


def test_pages_carry_security_headers_and_a_strict_session_cookie(
        api: ApiService, redis_conn: redis.Redis, prefix: str, routing_key: str) -> None:
    token, _ = tokens.create(redis_conn, Keyspace(prefix), "http-test", tuple(tokens.SCOPES))
    with httpx.Client(base_url=api.url) as http:
        signed = sign_in(http, token)
        assert signed.status_code == 303
        cookie = signed.headers.get_list("set-cookie")[0]
        assert cookie.startswith("monitao_pd_session=")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert token not in cookie
        for path in ("/", "/incidents", "/dead-letters", "/destinations", "/maintenance"):
            page = http.get(path)
            assert page.status_code == 200, path
            csp = page.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
            assert page.headers["x-content-type-options"] == "nosniff"
            assert page.headers["cache-control"] == "no-store"
            assert routing_key not in page.text
            # nothing fetched from elsewhere: every script and stylesheet is the console's
            assert not re.search(r'(src|href)="(https?:)?//', page.text), path


def test_the_vendored_javascript_names_its_version_and_licence() -> None:
    vendored = sorted(p.name for p in Path(STATIC).iterdir())
    assert vendored == ["console.css", "htmx.LICENSE", "htmx.min.js"]
    head = (Path(STATIC) / "htmx.min.js").read_text()[:400]
    assert "htmx 2.0.11" in head and "Zero-Clause BSD (0BSD)" in head
    assert "Zero-Clause BSD" in (Path(STATIC) / "htmx.LICENSE").read_text()
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert "<script>" not in text and " style=" not in text, template.name  # CSP: none
        assert not re.search(r"https?://(?!htmx\.org)", text), template.name


def test_a_session_keeps_no_secret_and_expires(redis_conn: redis.Redis, prefix: str) -> None:
    from api.console.sessions import SessionStore
    from config import defaults
    from config.errors import AuthenticationError

    keys = Keyspace(prefix)
    token, _ = tokens.create(redis_conn, keys, "session-test", ["incidents:read"])
    store = SessionStore(redis_conn, keys)
    session_id = store.sign_in(token)
    [key] = list(redis_conn.scan_iter(keys.console_session("*")))
    stored = redis_conn.hgetall(key)
    assert session_id not in key and session_id not in str(stored)  # only its digest
    assert token not in str(stored) and stored["token"] == tokens.digest(token)
    assert 0 < redis_conn.ttl(key) <= defaults.CONSOLE_SESSION_SECONDS
    session = store.find(session_id)
    assert session is not None and session.allows("incidents:read")
    assert not session.allows("dead-letters:write")
    assert session.csrf_matches(session.csrf) and not session.csrf_matches("")
    assert store.find(session_id + "x") is None and store.find(None) is None
    store.sign_out(session)
    assert store.find(session_id) is None
    with pytest.raises(AuthenticationError):
        store.sign_in("mpd_unknown")


def test_the_maintenance_form_keeps_a_window_off_pagerduty_when_asked() -> None:
    from api.console.dependencies import Form
    from api.console.maintenance import window_fields

    base = {"destination": ["prod"], "weekly": ["sun 02:00-04:00"]}
    assert window_fields(Form(base))["sync"] is True
    assert window_fields(Form({**base, "no_sync": ["1"]}))["sync"] is False
