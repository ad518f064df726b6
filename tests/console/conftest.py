"""The console in a real browser: Playwright for Python driving Debian's chromium against a
real `monitao-pd api` (uvicorn in a thread), real Celery workers and the simulator.

No Chromium on the machine: the browser tests are skipped, with one line at the end of the
run saying how to get one (`apt-get install -y chromium`); under `CI=true` they fail
instead. Playwright's own browser download is never used (it does not work here). A
failing test leaves a screenshot of its page in `build/console-screenshots/`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from api.server import ApiService
from config import tokens
from config.destinations import Destination
from config.keyspace import Keyspace
from config.secrets import generate_key
from tests.conftest import Fleet

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
HOW_TO_GET_ONE = ("browser tests (tests/console) skipped: no Chromium found; "
                  "`apt-get install -y chromium` (Debian's package) runs them")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "console-screenshots"
# Browser waits: generous for a machine shared by several test runs, never unbounded.
WAIT_MS = 20_000
_skipped: list[str] = []


def find_chromium() -> str | None:
    """Debian's chromium (or a chromium-browser) on the PATH."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped:
        terminalreporter.write_line(HOW_TO_GET_ONE)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session's browser tests."""
    path = find_chromium()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no Chromium found and CI=true: install Debian's package "
                        "(`apt-get install -y chromium`; .ci/run does it)")
        _skipped.append("no chromium")
        pytest.skip(HOW_TO_GET_ONE)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context and page at 1280x800; a screenshot is kept if the test
    fails."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    try:
        yield opened
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shot = SCREENSHOTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name) + ".png")
            try:
                opened.screenshot(path=str(shot), full_page=True)
                print(f"\nscreenshot of the failing page: {shot}")
            except Exception as exc:  # noqa: BLE001 - a lost screenshot must not hide the failure
                print(f"\nno screenshot ({exc.__class__.__name__})")
        context.close()


@dataclass
class Console:
    """A running console: its URL, a token with every scope, the fleet behind it, and
    the browser page."""

    url: str
    token: str
    fleet: Fleet
    api: ApiService
    page: Any

    def open(self, path: str = "/") -> Any:
        """Go to a page of the console; the response."""
        return self.page.goto(self.url + path)

    def sign_in(self, token: str | None = None) -> None:
        """Sign in through the form, as a person would."""
        self.open("/sign-in")
        self.page.get_by_label("API token").fill(token or self.token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_load_state()


@pytest.fixture
def secret_keys() -> str:
    """A key ring for run-time destinations (the API seals, the workers open)."""
    return generate_key()


@pytest.fixture
def fleet_options(secret_keys: str) -> dict[str, Any]:
    """Settings of the test's fleet and API (a test may add to them)."""
    return {"secret_keys": secret_keys}


@pytest.fixture
def console(make_fleet: Callable[..., AbstractContextManager[Fleet]],
            destinations: dict[str, Destination], redis_conn: redis.Redis, prefix: str,
            page: Any, fleet_options: dict[str, Any]) -> Iterator[Console]:
    """Real workers, the simulator, the API with its console, a token, and a page."""
    token, _ = tokens.create(redis_conn, Keyspace(prefix), "console-test", tuple(tokens.SCOPES))
    with make_fleet(**fleet_options) as fleet, ApiService(fleet.settings, destinations) as api:
        yield Console(api.url, token, fleet, api, page)


@pytest.fixture
def signed_in(console: Console) -> Console:
    """The console, signed in."""
    console.sign_in()
    return console
