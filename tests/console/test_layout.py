"""Every page in a real browser, as a person without a mouse or with a phone meets it:
each control has a label, nothing is wider than the window at 1280x800 or at 390 px, and
signing in and moving around work from the keyboard alone."""

from __future__ import annotations

import redis
from playwright.sync_api import expect

from config.keyspace import Keyspace
from config.registry import registry_for
from tests.conftest import random_routing_key
from tests.console.conftest import Console
from worker import maintenance_windows

# Controls without a label, and how wide the page is against the window.
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(el => el.type !== 'hidden')
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON'
                && el.textContent.trim()))
  .map(el => el.outerHTML.slice(0, 120))"""
OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"


def make_something_of_everything(console: Console, redis_conn: redis.Redis,
                                 prefix: str) -> str:
    """A delivered incident, a dead letter, a run-time destination and a window."""
    fleet, keys = console.fleet, Keyspace(prefix)
    ok = fleet.producer.send({"action": "trigger", "monitor_id": "1", "incident_id": "42",
                              "summary": "[DOWN] a long summary " * 4})
    assert fleet.wait_final([ok]) == {ok: "delivered"}
    fleet.sim.set_faults(force_status=400)
    dead = fleet.producer.send({"action": "trigger", "monitor_id": "1", "incident_id": "43",
                                "summary": "[DOWN] b"})
    assert fleet.wait_final([dead]) == {dead: "dead_lettered"}
    fleet.sim.set_faults(force_status=None)
    registry_for(fleet.settings, redis_conn).add(
        "a-customer-with-a-rather-long-destination-name", {
            "events_url": fleet.sim.events_url, "account": "customer-4711"},
        random_routing_key())
    maintenance_windows.add(redis_conn, keys, console.api.app.state.services.destinations,
                            {"destination": "prod", "weekly": "sun 02:00-04:00",
                             "id": "weekly-backups", "reason": "backups"})
    return dead


def test_every_page_is_labelled_and_fits_at_1280_and_390(
        signed_in: Console, redis_conn: redis.Redis, prefix: str) -> None:
    dead = make_something_of_everything(signed_in, redis_conn, prefix)
    page = signed_in.page
    pages = ["/", "/incidents?incident_id=42", "/dead-letters", f"/dead-letters/{dead}",
             "/destinations", "/destinations/new",
             "/destinations/a-customer-with-a-rather-long-destination-name/edit",
             "/destinations/a-customer-with-a-rather-long-destination-name/remove",
             "/maintenance"]
    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        for path in pages:
            assert signed_in.open(path).status == 200, path
            assert page.evaluate(UNLABELLED) == [], path
            assert page.evaluate(OVERFLOW) <= 0, f"{path} is wider than {width} px"
            assert page.get_by_role("heading", level=1).count() == 1, path
    signed_in.open("/destinations")
    page.get_by_role("button", name="Send test to prod").click()
    expect(page.get_by_role("status")).to_contain_text("works")
    page.wait_for_load_state()
    assert page.evaluate(UNLABELLED) == [] and page.evaluate(OVERFLOW) <= 0
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.wait_for_load_state()
    assert page.evaluate(UNLABELLED) == [] and page.evaluate(OVERFLOW) <= 0


def test_sign_in_and_move_around_from_the_keyboard(console: Console) -> None:
    page = console.page
    console.open("/sign-in")
    page.keyboard.type(console.token)  # the token field has the focus
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    reached = []
    for _ in range(8):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.textContent.trim()"))
    for name in ("Overview", "Incidents", "Dead letters", "Destinations", "Maintenance",
                 "Sign out"):
        assert name in reached, reached
    while page.evaluate("document.activeElement.textContent.trim()") != "Incidents":
        page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_label("Incident ID")).to_be_visible()
    page.get_by_label("Incident ID").focus()
    page.keyboard.type("nothing-here")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("no timeline for incident 'nothing-here'")
