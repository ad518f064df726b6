"""`GET /v1/incidents/{id}/timeline` (entries, the summary figures, pages) and
`POST /v1/destinations/{name}/test` against the simulator: a success and PagerDuty's 400."""

from __future__ import annotations

import time

import httpx

from tests.api.conftest import problems
from tests.cli.operate.support import event
from tests.conftest import Fleet
from worker import timeline


def test_timeline_entries_summary_and_pages(client: httpx.Client, fleet: Fleet) -> None:
    ids = client.post("/v1/events/batch", json={"events": [
        event(5, 50, "trigger"), event(5, 50, "resolve")]}).json()["event_ids"]
    assert set(fleet.wait_final(ids).values()) == {"delivered"}
    whole = client.get("/v1/incidents/50/timeline")
    assert whole.status_code == 200
    body = whole.json()
    stages = [e["stage"] for e in body["entries"]]
    assert stages.count("enqueued") == 2 and stages.count("delivered") == 2
    expected = timeline.summarize("50", timeline.read(fleet.redis, fleet.keys, "50"))
    assert body["summary"] == expected  # what `monitao-pd timeline --summary --json` prints
    assert body["summary"]["states"] == {"delivered": 2} and body["next_cursor"] is None

    walked, cursor, pages = [], None, 0
    while True:
        page = client.get("/v1/incidents/50/timeline",
                          params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        pages += 1
        assert (page["summary"] is None) == (cursor is not None)  # first page only
        assert page["summary"] in (None, expected)
        walked += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == body["entries"] and pages == (len(walked) + 1) // 2

    missing = client.get("/v1/incidents/nope/timeline")
    assert missing.status_code == 404
    assert problems(missing) == ["no timeline for incident 'nope'"]
    bad = client.get("/v1/incidents/has space/timeline")
    assert bad.status_code == 422 and problems(bad)[0].startswith("incident_id: String should")
    timeline_cursor = client.get("/v1/incidents/50/timeline",
                                 params={"limit": 1}).json()["next_cursor"]
    other = client.get("/v1/dead-letters", params={"cursor": timeline_cursor})
    assert other.status_code == 422  # a timeline's cursor is no dead-letter cursor
    assert problems(other) == ["cursor: not a cursor from a previous page (start without one)"]


def test_send_test_delivers_a_trigger_and_its_resolve(client: httpx.Client,
                                                      fleet: Fleet) -> None:
    response = client.post("/v1/destinations/staging/test")
    assert response.status_code == 200
    report = response.json()
    assert report["ok"] is True and report["destination"] == "staging"
    trigger, resolve = report["results"]
    assert (trigger["action"], resolve["action"]) == ("trigger", "resolve")
    for step in (trigger, resolve):
        assert (step["state"], step["http_status"], step["errors"]) == ("delivered", 202, [])
        assert step["latency_ms"] >= 0 and step["attempt_latency_ms"] >= 0
    dedup_key = f"monitao-monitor-monitao-pd-test-incident-{report['incident_id']}"
    assert [e["event_action"] for e in fleet.sim.received()
            if e["dedup_key"] == dedup_key] == ["trigger", "resolve"]


def test_send_test_reports_pagerdutys_400(client: httpx.Client, fleet: Fleet) -> None:
    fleet.sim.set_faults(force_status=400)
    report = client.post("/v1/destinations/prod/test").json()
    assert report["ok"] is False
    for step in report["results"]:
        assert (step["state"], step["reason"], step["http_status"]) == (
            "dead_lettered", "rejected", 400)
        assert step["errors"] == ["status 400 forced by the simulator"]
        assert step["error"].startswith("HTTP 400")


def test_send_test_answers_within_its_timeout(client: httpx.Client) -> None:
    # no worker: both events stay pending, and the answer comes when the time is up
    started = time.monotonic()
    report = client.post("/v1/destinations/prod/test", params={"timeout": 0.5}).json()
    assert time.monotonic() - started < 3
    assert [s["state"] for s in report["results"]] == ["pending", "pending"]
    assert report["results"][0]["error"] == "not delivered within 0.5 s"
    unknown = client.post("/v1/destinations/nope/test")
    assert unknown.status_code == 404
    assert problems(unknown) == ["unknown destination 'nope' (configured: prod, staging)"]
    too_long = client.post("/v1/destinations/prod/test", params={"timeout": 1000})
    assert too_long.status_code == 422
    level = client.post("/v1/destinations/prod/test", params={"level": "nope", "timeout": 1})
    assert level.status_code == 422 and problems(level)[0].startswith("level: 'nope'")
