"""The console's screenshots for the README, taken against a running fleet (not by hand).

    .venv/bin/python -m tests.console.screenshots [--out docs/console] [--minutes 3]

Starts what a fleet needs on this machine — Redis (the local one on database 9 under a key
prefix of this run's own, or an embedded one), the PagerDuty simulator, real Celery
workers (threads), the webhook receiver and `monitao-pd api` with its console — then
sends traffic for a few minutes (deliveries, a burst of 500s, a 429, PagerDuty refusing
some events, a responder acknowledging), and photographs each page with Debian's chromium
at 1280x800 (and two at 390 px wide). Every key it wrote is deleted at the end. `make
screenshots` runs it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis
from celery.contrib.testing.worker import start_worker

from api.server import ApiService
from config import tokens
from config.connections import redis_client
from config.destinations import Destination, parse_destinations
from config.embedded_redis import EmbeddedRedis
from config.keyspace import Keyspace
from config.registry import registry_for
from config.secrets import generate_key
from config.settings import Settings, load_settings
from producer import AlertProducer
from simulator import Simulator
from tests.conftest import random_routing_key
from tests.console.conftest import CHROMIUM_ARGS, find_chromium
from webhooks import WebhookService
from worker import maintenance_windows, timeline
from worker.app import create_app

OUT = Path(__file__).resolve().parents[2] / "docs" / "console"
LOCAL_REDIS = "redis://127.0.0.1:6379/9"
SECRET = "whsec-screenshots"
RESPONDER = "Jane Responder"


def _redis_url(stack: ExitStack) -> str:
    probe = redis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=0.5)
    try:
        probe.ping()
        return LOCAL_REDIS
    except redis.ConnectionError:
        return str(stack.enter_context(EmbeddedRedis()).url)
    finally:
        probe.close()


def _destinations(sim: Simulator) -> dict[str, Destination]:
    return parse_destinations({"destinations": {
        "prod": {"routing_key": random_routing_key(), "events_url": sim.events_url,
                 "rate_limit_per_minute": 100},
        "staging": {"routing_key": random_routing_key(), "events_url": sim.events_url,
                    "rate_limit_per_minute": 60, "account": "monitao"},
    }}, environ={})


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise SystemExit(f"screenshots: timed out waiting for {what}")


def _final(client: redis.Redis, keys: Keyspace, event_id: str, timeout: float = 60) -> str:
    def state() -> str | None:
        found = client.hget(keys.event(event_id), "state")
        return found if found not in (None, "pending") else None

    return str(_wait(state, timeout, f"event {event_id} to finish"))


def _traffic(settings: Settings, producer: AlertProducer, sim: Simulator, client: redis.Redis,
             minutes: float) -> None:
    """A few minutes of alerts with the faults an on-call engineer meets."""
    keys = Keyspace(settings.key_prefix)
    end = time.monotonic() + minutes * 60
    round_number = 0
    while time.monotonic() < end:
        round_number += 1
        if round_number % 5 == 2:
            sim.set_faults(fail_next=3, error_status=500)
        elif round_number % 7 == 3:
            sim.set_faults(fail_next=1, error_status=429)
        ids = []
        for n in range(6):
            monitor = 100 + (round_number * 7 + n) % 23
            incident = f"{monitor}-{round_number}"
            ids.append(producer.send({"destination": "prod" if n % 3 else "staging",
                                      "action": "trigger", "monitor_id": str(monitor),
                                      "incident_id": incident, "level": "major",
                                      "summary": f"[DOWN] shop-{monitor}.example.com"}))
            if n % 2:
                ids.append(producer.send({"destination": "prod" if n % 3 else "staging",
                                          "action": "resolve", "monitor_id": str(monitor),
                                          "incident_id": incident}))
        for event_id in ids:
            _final(client, keys, event_id)
        time.sleep(4)


def _every_stage(producer: AlertProducer, sim: Simulator, client: redis.Redis,
                 keys: Keyspace) -> str:
    """Incident 4242: a retry, PagerDuty's acknowledgement, a refused update, the resolve."""
    event = {"destination": "prod", "monitor_id": "77", "incident_id": "4242"}
    sim.set_faults(fail_next=1, error_status=502)
    trigger = producer.send({**event, "action": "trigger", "level": "critical",
                             "summary": "[DOWN] checkout.example.com - HTTP 503"})
    _final(client, keys, trigger)
    sim.respond("monitao-monitor-77-incident-4242", "acknowledge", RESPONDER)
    _wait(lambda: any(e["stage"] == "pagerduty_acknowledged"
                      for e in timeline.read(client, keys, "4242")), 30, "the acknowledgement")
    sim.set_faults(force_status=400)
    update = producer.send({**event, "action": "trigger", "level": "critical",
                            "summary": "[DOWN] checkout.example.com - timeout"})
    _final(client, keys, update)
    sim.set_faults(force_status=None)
    resolve = producer.send({**event, "action": "resolve"})
    _final(client, keys, resolve)
    _wait(lambda: any(e["stage"] == "pagerduty_resolved"
                      for e in timeline.read(client, keys, "4242")), 30, "the resolution")
    return "4242"


def _dead_letters(producer: AlertProducer, sim: Simulator, client: redis.Redis,
                  keys: Keyspace) -> list[str]:
    sim.set_faults(force_status=400)
    ids = [producer.send({"destination": "prod", "action": "trigger", "monitor_id": str(m),
                          "incident_id": f"{m}-7", "summary": f"[DOWN] api-{m}.example.com"})
           for m in (310, 311, 312)]
    for event_id in ids:
        _final(client, keys, event_id)
    sim.set_faults(force_status=None)
    return ids


def _shoot(page: Any, out: Path, name: str, *, full_page: bool = False) -> None:
    page.wait_for_load_state()
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    print(f"  {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


def _photograph(url: str, token: str, out: Path, incident: str, dead: list[str]) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(url + "/sign-in")
            page.get_by_label("API token").fill(token[:12] + "…")
            _shoot(page, out, "sign-in")
            page.get_by_label("API token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("heading", name="Overview").wait_for()
            _shoot(page, out, "overview")
            page.goto(f"{url}/incidents?incident_id={incident}")
            _shoot(page, out, "incident", full_page=True)
            page.goto(url + "/dead-letters")
            for event_id in dead[:2]:
                page.get_by_role("checkbox", name=f"Select dead letter {event_id[:12]}").check()
            page.get_by_role("button", name="Preview replay").click()
            page.get_by_text("Replay preview").wait_for()
            page.locator("#replay-result").scroll_into_view_if_needed()
            _shoot(page, out, "dead-letters")
            page.goto(url + "/destinations")
            _shoot(page, out, "destinations")
            page.get_by_role("button", name="Send test to acme-web").click()
            page.get_by_role("status").wait_for()
            _shoot(page, out, "send-test")
            page.goto(url + "/destinations/new")
            _shoot(page, out, "add-destination")
            page.goto(url + "/maintenance")
            _shoot(page, out, "maintenance")
            page.set_viewport_size({"width": 390, "height": 844})
            page.goto(url + "/")
            _shoot(page, out, "overview-390")
            page.goto(f"{url}/incidents?incident_id={incident}")
            _shoot(page, out, "incident-390")
            context.close()
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    """Take the screenshots; 0 when done."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where the PNGs go")
    parser.add_argument("--minutes", type=float, default=3.0,
                        help="minutes of traffic before the photographs (the charts' data)")
    args = parser.parse_args(argv)
    if find_chromium() is None:
        print("screenshots: no Chromium found; `apt-get install -y chromium`", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = f"screenshots-{uuid.uuid4().hex[:8]}:"
    with ExitStack() as stack:
        url = _redis_url(stack)
        settings = load_settings(redis_url=url, key_prefix=prefix, secret_keys=generate_key(),
                                 webhook_secrets=SECRET, retry_base_seconds=0.2,
                                 retry_cap_seconds=2, dispatch_interval=0.05,
                                 cooldown_base_seconds=2, cooldown_max_seconds=5,
                                 uncertain_window_seconds=2)
        client = redis_client(settings)
        keys = Keyspace(prefix)
        stack.callback(lambda: [client.delete(k) for k in client.scan_iter(f"{prefix}*", 1000)])
        sim = stack.enter_context(Simulator(seed=7))
        sim.set_faults(rate_limit=None)
        destinations = _destinations(sim)
        app = create_app(settings, destinations)
        app.conf.worker_hijack_root_logger = False
        stack.callback(app.fleet.close)
        stack.enter_context(start_worker(app, pool="threads", concurrency=8,
                                         perform_ping_check=False, loglevel="WARNING",
                                         shutdown_timeout=30))
        receiver = stack.enter_context(WebhookService(settings, block_seconds=0.2))
        sim.set_webhook(receiver.url, SECRET)
        api = stack.enter_context(ApiService(settings, destinations))
        producer = AlertProducer(settings, destinations=destinations, redis=client,
                                 celery_app=app)
        registry = registry_for(settings, client, destinations)
        for name, account in (("acme-web", "acme"), ("acme-api", "acme"),
                              ("globex-eu", "globex")):
            registry.add(name, {"events_url": sim.events_url, "account": account,
                                "region": "eu" if name.endswith("eu") else "us"},
                         random_routing_key())
        maintenance_windows.add(client, keys, producer.destinations, {
            "destination": "globex-eu", "weekly": "sun 02:00-04:00", "mode": "hold",
            "id": "globex-backups", "reason": "weekly database backups"})
        print(f"a fleet on {api.url} (prefix {prefix}); {args.minutes:g} min of traffic")
        _traffic(settings, producer, sim, client, args.minutes)
        incident = _every_stage(producer, sim, client, keys)
        dead = _dead_letters(producer, sim, client, keys)
        token, _ = tokens.create(client, keys, "screenshots", tuple(tokens.SCOPES))
        print("photographs:")
        _photograph(api.url, token, args.out, incident, dead)
    return 0


if __name__ == "__main__":
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        print("screenshots: no Chromium found; `apt-get install -y chromium`", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
