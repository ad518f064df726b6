"""Signing in and out in a real browser: the API token form, the session cookie's
attributes, being refused once signed out (or once the token is revoked), and forms
posted without their CSRF token refused with nothing changed."""

from __future__ import annotations

import re

import redis
from playwright.sync_api import expect

from api.console.dependencies import SESSION_COOKIE
from config import tokens
from config.keyspace import Keyspace
from tests.console.conftest import Console
from worker import maintenance_windows


def test_sign_in_with_a_token_then_sign_out_and_be_refused(console: Console) -> None:
    page = console.page
    console.open("/dead-letters")
    expect(page).to_have_url(re.compile(r"/sign-in\?next=%2Fdead-letters$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    page.get_by_label("API token").fill("mpd_not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked API token")

    page.get_by_label("API token").fill(console.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(console.url + "/dead-letters")  # where it was going
    expect(page.get_by_role("heading", name="Dead letters")).to_be_visible()
    nav = page.get_by_role("navigation", name="Console")
    for name in ("Overview", "Incidents", "Dead letters", "Destinations", "Maintenance"):
        expect(nav.get_by_role("link", name=name)).to_be_visible()
    [cookie] = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert console.token not in cookie["value"]  # an opaque id, nothing of the token
    assert page.evaluate("document.cookie") == ""  # no script can read it

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("Signed out.")
    console.open("/dead-letters")
    expect(page).to_have_url(re.compile(r"/sign-in\?next="))  # refused: back to the form
    # the old cookie, kept and sent again, signs nothing in
    page.context.add_cookies([{"name": SESSION_COOKIE, "value": cookie["value"],
                               "url": console.url}])
    again = page.request.get(console.url + "/destinations", max_redirects=0)
    assert again.status == 303 and "/sign-in" in again.headers["location"]
    posted = page.request.post(console.url + "/maintenance/x/remove",
                               form={"csrf_token": "anything"})
    assert posted.status == 401


def test_revoking_the_token_ends_its_sessions(console: Console, redis_conn: redis.Redis,
                                             prefix: str) -> None:
    console.sign_in()
    expect(console.page.get_by_role("heading", name="Overview")).to_be_visible()
    tokens.revoke(redis_conn, Keyspace(prefix), "console-test")
    console.open("/incidents")
    expect(console.page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_token_without_the_scope_is_refused_the_page(console: Console,
                                                        redis_conn: redis.Redis,
                                                        prefix: str) -> None:
    reader, _ = tokens.create(redis_conn, Keyspace(prefix), "reader", ["incidents:read"])
    console.sign_in(reader)
    response = console.open("/dead-letters")
    assert response.status == 403
    expect(console.page.get_by_role("alert")).to_contain_text(
        "lacks the scope 'dead-letters:read'")
    assert console.open("/incidents").status == 200


def test_forms_posted_without_their_csrf_token_are_refused(
        signed_in: Console, redis_conn: redis.Redis, prefix: str) -> None:
    page, keys = signed_in.page, Keyspace(prefix)
    signed_in.open("/maintenance")
    form = page.locator("form[action$='/maintenance']")
    form.locator("input[name=csrf_token]").evaluate("input => input.remove()")
    page.get_by_label("Destination").fill("prod")
    page.get_by_label("Weekly (UTC)").fill("sun 02:00-04:00")
    page.get_by_label("Window ID").fill("csrf-check")
    page.get_by_role("button", name="Add window").click()
    expect(page.get_by_role("alert")).to_contain_text("without this session's CSRF token")
    assert maintenance_windows.listing(redis_conn, keys, signed_in.api.app.state.services
                                       .destinations) == []  # nothing was added

    # a wrong token, and none at all, from a script posting with the session's cookie
    wrong = page.request.post(signed_in.url + "/sign-out", form={"csrf_token": "forged"})
    assert wrong.status == 403
    bare = page.request.post(signed_in.url + "/dead-letters/purge",
                             form={"event_id": "x", "confirm": "yes"})
    assert bare.status == 403
    signed_in.open("/")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()  # still signed in

    # the sign-in form has a CSRF token of its own (a page elsewhere cannot sign you in)
    other = page.context.browser.new_context()
    try:
        posted = other.request.post(signed_in.url + "/sign-in",
                                    form={"token": signed_in.token}, max_redirects=0)
        assert posted.status == 403
        assert not [c for c in other.cookies() if c["name"] == SESSION_COOKIE]
    finally:
        other.close()
