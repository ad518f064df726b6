"""`/v1/dead-letters` over HTTP with real workers: list (filters, pages), counts, show (by
id or prefix), replay restoring a dead letter to delivered, purge; 404, 409 and 422."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import problems
from tests.cli.operate.support import event
from tests.conftest import Fleet


@pytest.fixture
def letters(client: httpx.Client, fleet: Fleet) -> dict[str, str]:
    """Three dead letters: two rejected (400) on prod, one http_404 on staging."""
    fleet.sim.set_faults(force_status=400)
    found = {}
    for name, sent in (("a", event(1, 11, "trigger")), ("b", event(1, 12, "trigger"))):
        found[name] = client.post("/v1/events", json=sent).json()["event_id"]
        assert fleet.wait_final([found[name]]) == {found[name]: "dead_lettered"}
    fleet.sim.set_faults(force_status=404)
    found["staging"] = client.post(
        "/v1/events", json=event(2, 21, "trigger", destination="staging")).json()["event_id"]
    assert fleet.wait_final([found["staging"]]) == {found["staging"]: "dead_lettered"}
    fleet.sim.set_faults(force_status=None)
    return found


def ids(page: dict) -> list[str]:
    return [letter["event_id"] for letter in page["dead_letters"]]


def test_list_filters_and_pages(client: httpx.Client, letters: dict[str, str]) -> None:
    everything = client.get("/v1/dead-letters").json()
    assert ids(everything) == [letters["a"], letters["b"], letters["staging"]]
    assert everything["next_cursor"] is None
    assert [e["reason"] for e in everything["dead_letters"]] == ["rejected", "rejected",
                                                                 "http_404"]
    assert ids(client.get("/v1/dead-letters", params={"destination": "staging"}).json()) == [
        letters["staging"]]
    assert ids(client.get("/v1/dead-letters", params={"reason": "rejected"}).json()) == [
        letters["a"], letters["b"]]
    third = everything["dead_letters"][2]["dead_lettered_at"]
    assert ids(client.get("/v1/dead-letters", params={"since": third}).json()) == [
        letters["staging"]]
    assert ids(client.get("/v1/dead-letters",
                          params={"until": "2000-01-01T00:00:00Z"}).json()) == []

    walked, cursor = [], None
    while True:
        page = client.get("/v1/dead-letters", params={"limit": 1, **(
            {"cursor": cursor} if cursor else {})}).json()
        walked += ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == ids(everything)
    page = client.get("/v1/dead-letters", params={"limit": 2, "reason": "rejected"}).json()
    assert ids(page) == [letters["a"], letters["b"]] and page["next_cursor"] is None

    assert client.get("/v1/dead-letters/counts").json() == {
        "counts": {"rejected": 2, "http_404": 1}, "total": 3}
    bad = client.get("/v1/dead-letters", params={"cursor": "garbage!"})
    assert bad.status_code == 422
    assert problems(bad) == ["cursor: not a cursor from a previous page (start without one)"]
    wrong = client.get("/v1/dead-letters", params={"since": "2030-01-01T00:00:00Z",
                                                   "until": "2020-01-01T00:00:00Z"})
    assert wrong.status_code == 422 and problems(wrong) == ["since: is after until"]
    assert problems(client.get("/v1/dead-letters", params={"limit": 0}))[0].startswith(
        "limit: Input should be greater than or equal to 1")


def test_show_by_id_or_prefix_with_the_key_masked(
    client: httpx.Client, letters: dict[str, str], routing_key: str
) -> None:
    shown = client.get(f"/v1/dead-letters/{letters['a']}")
    assert shown.status_code == 200
    body = shown.json()
    assert body["reason"] == "rejected" and body["body"]["routing_key"] == "********"
    assert body["errors"] == ["status 400 forced by the simulator"]
    assert [e["stage"] for e in body["timeline"]] == ["enqueued", "attempt", "dead_lettered"]
    assert routing_key not in shown.text
    assert client.get(f"/v1/dead-letters/{letters['a'][:12]}").json() == body

    missing = client.get("/v1/dead-letters/no-such-event")
    assert missing.status_code == 404 and problems(missing) == ["no event 'no-such-event'"]


def test_an_ambiguous_prefix_is_refused(client: httpx.Client, fleet: Fleet) -> None:
    for event_id in ("feedface0001", "feedface0002"):
        fleet.redis.hset(fleet.keys.event(event_id), mapping={
            "state": "dead_lettered", "reason": "rejected", "slot": "prod/k"})
        fleet.redis.zadd(fleet.keys.dead_letters, {event_id: 1})
    response = client.get("/v1/dead-letters/feedface")
    assert response.status_code == 422
    assert problems(response) == ["'feedface' begins the ids of 2 dead letters "
                                  "(feedface0001, feedface0002): give more characters"]


def test_replay_restores_a_dead_letter_to_delivered(
    client: httpx.Client, letters: dict[str, str], fleet: Fleet
) -> None:
    dry = client.post("/v1/dead-letters/replay",
                      json={"event_ids": [letters["a"][:10]], "dry_run": True})
    assert dry.status_code == 200
    assert dry.json()["tally"] == {"would_queue": 1}
    assert fleet.state(letters["a"]) == "dead_lettered"

    done = client.post("/v1/dead-letters/replay", json={"event_ids": [letters["a"]]}).json()
    [decision] = done["decisions"]
    assert (decision["event_id"], decision["outcome"]) == (letters["a"], "queued")
    assert done["refused"] == 0 and done["dry_run"] is False
    assert fleet.wait_final([letters["a"]]) == {letters["a"]: "delivered"}
    replayed = [e for e in client.get("/v1/incidents/11/timeline").json()["entries"]
                if e["stage"] == "replayed"]
    assert replayed[0]["operator"] == "api:everything"  # the token's name
    assert letters["a"] not in ids(client.get("/v1/dead-letters").json())

    by_filter = client.post("/v1/dead-letters/replay",
                            json={"destination": "staging", "dry_run": True}).json()
    assert [d["event_id"] for d in by_filter["decisions"]] == [letters["staging"]]
    unknown = client.post("/v1/dead-letters/replay", json={"event_ids": ["no-such-event"]})
    assert unknown.status_code == 404
    neither = client.post("/v1/dead-letters/replay", json={})
    assert neither.status_code == 422
    assert problems(neither) == ["selection: name event ids, give filters, or --all (all)"]
    both = client.post("/v1/dead-letters/replay", json={"event_ids": ["x"], "all": True})
    assert problems(both) == ["selection: give event ids or filters/--all (all), not both"]


def test_purge_one_then_it_is_gone(
    client: httpx.Client, letters: dict[str, str], fleet: Fleet
) -> None:
    purged = client.delete(f"/v1/dead-letters/{letters['b'][:8]}")
    assert purged.status_code == 200
    assert purged.json() == {"event_id": letters["b"], "state": "purged"}
    assert fleet.state(letters["b"]) == "purged"
    again = client.delete(f"/v1/dead-letters/{letters['b']}")
    assert again.status_code == 404
    assert problems(again) == [f"{letters['b']!r} is not a dead letter (state purged)"]

    fleet.sim.set_faults(force_status=503)  # the replay stays pending, retrying
    client.post("/v1/dead-letters/replay", json={"event_ids": [letters["staging"]]})
    busy = client.delete(f"/v1/dead-letters/{letters['staging']}")
    fleet.sim.set_faults(force_status=None)
    assert busy.status_code == 409
    assert problems(busy) == [f"dead letter {letters['staging']!r} cannot be purged: a "
                              "replay of it is on its way (state pending)"]
