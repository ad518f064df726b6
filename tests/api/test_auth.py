"""Bearer tokens and scopes: every endpoint refuses no token or an unknown one (401) and
a token without its scope (403); a revoked token is refused within 2 s; tokens are made,
listed and revoked by `monitao-pd tokens`, and only their hash is stored."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from api.server import ApiService
from config import tokens
from tests.api.conftest import ALL_SCOPES, problems
from tests.cli.operate.support import run, run_json

# Every endpoint that needs a token: method, path, the scope, a body.
ENDPOINTS = [
    ("POST", "/v1/events", "events:write",
     {"action": "resolve", "monitor_id": "1", "incident_id": "1"}),
    ("POST", "/v1/events/batch", "events:write", {"events": []}),
    ("GET", "/v1/destinations", "destinations:read", None),
    ("POST", "/v1/destinations", "destinations:write",
     {"name": "acme", "routing_key": "A" * 32, "events_url": "http://127.0.0.1:9/v2/enqueue"}),
    ("GET", "/v1/destinations/prod", "destinations:read", None),
    ("PATCH", "/v1/destinations/prod", "destinations:write", {"source": "x"}),
    ("DELETE", "/v1/destinations/prod", "destinations:write", None),
    ("POST", "/v1/destinations/prod/test?timeout=0.1", "destinations:write", None),
    ("GET", "/v1/incidents/1/timeline", "incidents:read", None),
    ("GET", "/v1/dead-letters", "dead-letters:read", None),
    ("GET", "/v1/dead-letters/counts", "dead-letters:read", None),
    ("GET", "/v1/dead-letters/abcdefgh", "dead-letters:read", None),
    ("POST", "/v1/dead-letters/replay", "dead-letters:write", {"all": True}),
    ("DELETE", "/v1/dead-letters/abcdefgh", "dead-letters:write", None),
    ("GET", "/v1/maintenance-windows", "status:read", None),
    ("POST", "/v1/maintenance-windows", "maintenance:write",
     {"destination": "prod", "weekly": "sun 02:00-04:00", "id": "w1"}),
    ("DELETE", "/v1/maintenance-windows/w1", "maintenance:write", None),
    ("GET", "/v1/status?ping=false", "status:read", None),
]


def call(api: ApiService, method: str, path: str, body: object, token: str | None = None,
         authorization: str | None = None) -> httpx.Response:
    if token is not None:
        authorization = f"Bearer {token}"
    headers = {"Authorization": authorization} if authorization is not None else {}
    return httpx.request(method, api.url + path, json=body, headers=headers, timeout=30)


def test_every_endpoint_needing_a_token_is_listed_here(api: ApiService) -> None:
    document = httpx.get(api.url + "/openapi.json").json()
    secured = {(method.upper(), path) for path, operations in document["paths"].items()
               for method, operation in operations.items() if operation.get("security")}
    listed = {(method, re.sub(r"/destinations/prod\b", "/destinations/{name}",
                              path.split("?")[0])
               .replace("/1/", "/{incident_id}/").replace("abcdefgh", "{event_id}")
               .replace("/w1", "/{window_id}")) for method, path, _, _ in ENDPOINTS}
    assert secured == listed
    assert {"/healthz", "/metrics", "/openapi.json"} & {
        path for path, ops in document["paths"].items()
        if any(op.get("security") for op in ops.values())} == set()


@pytest.mark.parametrize(("method", "path", "scope", "body"), ENDPOINTS,
                         ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
def test_no_token_unknown_token_or_missing_scope_is_refused(
    api: ApiService, make_token: Callable[..., str], method: str, path: str, scope: str,
    body: object,
) -> None:
    for authorization in (None, "Bearer", "Bearer mpd_not-a-token", "Basic dXNlcjpwYXNz"):
        response = call(api, method, path, body, authorization=authorization)
        assert response.status_code == 401, (authorization, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        problems(response)
    others = make_token(*(s for s in ALL_SCOPES if s != scope))
    refused = call(api, method, path, body, others)
    assert refused.status_code == 403
    assert problems(refused) == [f"token 't0' lacks the scope {scope!r}"]
    allowed = call(api, method, path, body, make_token(scope))
    assert allowed.status_code not in (401, 403), allowed.text


def test_a_revoked_token_is_refused_within_2_seconds(
    api: ApiService, make_token: Callable[..., str], cli_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = make_token("status:read", name="soon-gone")
    assert call(api, "GET", "/v1/status?ping=false", None, token).status_code == 200
    code, out, _ = run(capsys, "tokens", "revoke", "soon-gone")
    assert (code, out) == (0, "revoked token 'soon-gone'\n")
    revoked_at = time.monotonic()
    while call(api, "GET", "/v1/status?ping=false", None, token).status_code != 401:
        assert time.monotonic() - revoked_at < 2.0, "still accepted 2 s after revocation"
        time.sleep(0.05)
    code, _, err = run(capsys, "tokens", "revoke", "soon-gone")
    assert code == 2 and err == "error: no token named 'soon-gone'\n"


def test_tokens_are_shown_once_and_stored_only_as_a_hash(
    cli_env: Path, redis_conn: redis.Redis, prefix: str, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "tokens", "create", "--name", "monitao-web",
                         "--scope", "events:write", "--scope", "incidents:read")
    assert code == 0
    token = out.strip()
    assert token.startswith("mpd_") and len(token) > 40 and out.count("\n") == 1
    assert "shown only this once" in err and token not in err
    assert run_json(capsys, "tokens", "list") == [{
        "name": "monitao-web", "scopes": ["events:write", "incidents:read"],
        "created_at": run_json(capsys, "tokens", "list")[0]["created_at"]}]
    code, listed, _ = run(capsys, "tokens", "list")
    assert "monitao-web" in listed and token not in listed
    for key in redis_conn.scan_iter(match=f"{prefix}*"):
        assert token not in key and token not in str(redis_conn.dump(key))
    assert redis_conn.exists(f"{prefix}token:{tokens.digest(token)}")

    code, _, err = run(capsys, "tokens", "create", "--name", "monitao-web", "--scope",
                       "status:read")
    assert code == 2 and "a token named 'monitao-web' exists" in err
    code, _, err = run(capsys, "tokens", "create", "--name", "bad name", "--scope", "nope")
    assert code == 2
    assert err == ("error: invalid input: name: 'bad name' must be 1-64 letters, digits, "
                   "'.', '_' or '-', starting with a letter or digit; scope: unknown scope "
                   "'nope' (one of " + ", ".join(ALL_SCOPES) + ")\n")
    code, _, err = run(capsys, "tokens", "create", "--name", "none")
    assert code == 2 and "scope: at least one is required" in err
