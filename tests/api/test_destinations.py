"""`/v1/destinations` over real HTTP: list, add, show, change and remove, with real Redis,
worker threads and the simulator. The answers are the records `monitao-pd destinations`
prints (the same `Registry` calls), the routing key only described; refusals are
problem+json in the CLI's words."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import httpx
import pytest
import redis

from api.server import ApiService
from config.keyspace import Keyspace
from config.registry import NO_KEY_RING, Registry
from config.secrets import fingerprint, parse_key_ring
from config.settings import Settings
from simulator import Simulator
from tests.api.conftest import problems
from tests.cli.operate.support import run
from tests.conftest import Fleet, random_routing_key, wait_until


def trigger(destination: str, incident: str) -> dict:
    return {"action": "trigger", "monitor_id": "7", "incident_id": incident,
            "destination": destination, "summary": "[DOWN] api test"}


def key_hash(key: str) -> str:
    """How the simulator records a routing key (sha256, 12 hex digits)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def received_keys(sim: Simulator, incident: str) -> list[str]:
    """The routing keys (as `key_hash`) of the events the simulator accepted for
    `incident`."""
    return [e["routing_key_hash"] for e in sim.received()
            if e["dedup_key"].endswith(f"-incident-{incident}")]


def test_add_list_show_change_and_remove(
    client: httpx.Client, sim: Simulator, key_ring: str, cli_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = random_routing_key()
    added = client.post("/v1/destinations", json={
        "name": "acme", "routing_key": key, "events_url": sim.events_url, "account": "acme",
        "severity_map": {"critical": "critical", "minor": "warning"}})
    assert added.status_code == 201, added.text
    assert added.headers["location"] == "/v1/destinations/acme"
    record = added.json()
    assert (record["origin"], record["read_only"], record["version"]) == ("registry", False, 1)
    assert record["routing_key"] == {
        "origin": "registry", "variable": None, "resolved": True, "length": 32,
        "fingerprint": fingerprint(key), "key_id": parse_key_ring(key_ring).primary_id}

    # GET answers what `monitao-pd destinations show --json` prints
    shown = client.get("/v1/destinations/acme")
    assert shown.status_code == 200
    code, out, _ = run(capsys, "destinations", "show", "acme", "--json")
    assert code == 0 and shown.json() == json.loads(out)
    assert shown.json()["state"] == {
        "pending_events": 0, "rate_window_requests": 0, "rate_waiting_keys": 0,
        "cooling_down": False, "cooldown_remaining_seconds": 0.0, "circuit": "closed",
        "circuit_failures": 0, "dead_letters": {}}

    listed = client.get("/v1/destinations").json()
    assert [(d["name"], d["read_only"]) for d in listed["destinations"]] == [
        ("acme", False), ("prod", True), ("staging", True)]
    assert listed["next_cursor"] is None and listed["destinations"][0] == record
    assert [d["name"] for d in client.get("/v1/destinations", params={
        "account": "acme"}).json()["destinations"]] == ["acme"]
    walked, cursor = [], None
    while True:
        page = client.get("/v1/destinations",
                          params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        walked += [d["name"] for d in page["destinations"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == ["acme", "prod", "staging"]

    # PATCH changes only what is given, as `destinations update`
    changed = client.patch("/v1/destinations/acme", json={
        "severity_map": {"minor": None, "major": "error"}, "rate_limit_per_minute": 60})
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert after["version"] == 2 and after["rate_limit_per_minute"] == 60
    assert after["severity_map"] == {"critical": "critical", "major": "error"}
    assert after["account"] == "acme" and after["routing_key"] == record["routing_key"]
    cleared = client.patch("/v1/destinations/acme", json={"account": None}).json()
    assert cleared["account"] is None and cleared["version"] == 3
    assert client.get("/v1/destinations", params={"account": "acme"}).json()[
        "destinations"] == []

    removed = client.delete("/v1/destinations/acme")
    assert removed.status_code == 200
    assert removed.json() == {"name": "acme", "pending_events": 0, "woken_keys": 0,
                              "circuit_deleted": False, "windows_removed": []}
    for method in ("GET", "PATCH", "DELETE"):
        gone = client.request(method, "/v1/destinations/acme",
                              json={"source": "x"} if method == "PATCH" else None)
        assert gone.status_code == 404 and problems(gone) == ["no destination 'acme'"]


def test_bad_input_is_refused_in_the_clis_words_and_nothing_is_stored(
    client: httpx.Client, cli_env: Path, capsys: pytest.CaptureFixture[str],
    redis_conn: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    short_key = "Sh0rtR0ut1ngKey"
    bad = {"name": "bad name", "routing_key": short_key, "region": "mars",
           "rate_limit_per_minute": "lots", "severity_map": {"minor": "loud"},
           "events_url": "ftp://x", "account": "a b", "source": "x\x1b[31m"}
    refused = client.post("/v1/destinations", json=bad)
    assert refused.status_code == 422 and refused.json()["detail"] == "invalid destination"
    found = problems(refused)
    # the CLI, given the same values, says the same lines
    monkeypatch.setattr("sys.stdin", io.StringIO(short_key))
    code, _, err = run(capsys, "destinations", "add", "bad name", "--routing-key-stdin",
                       "--region", "mars", "--rate-limit", "lots", "--severity", "minor=loud",
                       "--events-url", "ftp://x", "--account", "a b", "--source", "x\x1b[31m")
    assert code == 2
    assert sorted(found) == sorted(line.strip() for line in err.splitlines()[1:])
    assert len(found) == 8 and short_key not in refused.text
    assert "\x1b" not in refused.text and "x\\\\x1b[31m" in refused.text  # escaped, twice
    unknown = client.post("/v1/destinations", json={
        "name": "acme", "routing_key": random_routing_key(), "colour": "red"})
    assert problems(unknown) == ["colour: unknown setting"]
    missing = client.post("/v1/destinations", json={"name": "acme"})
    assert problems(missing) == ["routing_key: required"]
    # a routing key given as the whole body is not echoed either
    bare = client.post("/v1/destinations", json=random_routing_key())
    assert bare.status_code == 422 and problems(bare)[0].startswith("body: ")
    assert bare.json()["problems"][0].find("(got") == -1
    assert [k for k in redis_conn.scan_iter(match=f"{prefix}destination*")] == []

    taken = client.post("/v1/destinations", json={"name": "prod",
                                                  "routing_key": random_routing_key()})
    assert taken.status_code == 409 and "destinations file" in problems(taken)[0]
    for method, body in (("PATCH", {"source": "x"}), ("DELETE", None)):
        read_only = client.request(method, "/v1/destinations/prod", json=body)
        assert read_only.status_code == 409, read_only.text
        assert problems(read_only)[0].endswith("edit the file and restart the fleet")
    client.post("/v1/destinations", json={"name": "acme", "routing_key": random_routing_key(),
                                          "events_url": "http://127.0.0.1:9/v2/enqueue"})
    again = client.post("/v1/destinations", json={"name": "acme",
                                                  "routing_key": random_routing_key()})
    assert again.status_code == 409 and "already exists" in problems(again)[0]
    nothing = client.patch("/v1/destinations/acme", json={})
    assert nothing.status_code == 422
    assert problems(nothing) == ["nothing to change: give a setting or a routing key"]
    wrong = client.patch("/v1/destinations/acme", json={"region": "mars", "routing_key": "x"})
    assert wrong.status_code == 422 and len(problems(wrong)) == 2
    assert client.get("/v1/destinations/acme").json()["version"] == 1
    cursor = client.get("/v1/destinations", params={"cursor": "bm9wZQ"})
    assert cursor.status_code == 422
    assert problems(cursor) == ["cursor: not a cursor from a previous page (start without one)"]


def test_without_a_key_ring_a_routing_key_is_refused_with_503(
    settings: Settings, destinations, token: str, sim: Simulator, redis_conn: redis.Redis,
    prefix: str, key_ring: str,
) -> None:
    """The service cannot seal the key: 503 (its configuration, not the request, is at
    fault), saying what to set; a change that needs no sealing still works."""
    assert settings.secret_keys is None
    Registry(redis_conn, Keyspace(prefix), key_ring=parse_key_ring(key_ring)).add(
        "sealed", {"events_url": sim.events_url}, random_routing_key())
    with ApiService(settings, destinations) as service, httpx.Client(
            base_url=service.url, headers={"Authorization": f"Bearer {token}"}) as http:
        key = random_routing_key()
        refused = http.post("/v1/destinations", json={"name": "acme", "routing_key": key,
                                                      "events_url": sim.events_url})
        assert refused.status_code == 503 and problems(refused) == [NO_KEY_RING]
        assert key not in refused.text
        assert not redis_conn.exists(Keyspace(prefix).destination("acme"))
        invalid = http.post("/v1/destinations", json={"name": "acme", "routing_key": "short"})
        assert invalid.status_code == 422  # bad input is said first
        rekeyed = http.patch("/v1/destinations/sealed", json={"routing_key": key})
        assert rekeyed.status_code == 503 and problems(rekeyed) == [NO_KEY_RING]
        changed = http.patch("/v1/destinations/sealed", json={"source": "MoniTao EU"})
        assert changed.status_code == 200 and changed.json()["version"] == 2


def test_a_destination_added_through_the_api_is_delivered_to_within_2_seconds(
    client: httpx.Client, fleet: Fleet, sim: Simulator,
) -> None:
    key = random_routing_key()
    assert client.post("/v1/destinations", json={
        "name": "fresh", "routing_key": key, "events_url": sim.events_url}).status_code == 201
    added_at = time.monotonic()
    event_id = client.post("/v1/events", json=trigger("fresh", "f1")).json()["event_id"]
    wait_until(lambda: received_keys(sim, "f1"), timeout=10, interval=0.02,
               message="the simulator to receive the event")
    assert time.monotonic() - added_at < 2.0
    assert received_keys(sim, "f1") == [key_hash(key)]
    assert fleet.wait_final([event_id]) == {event_id: "delivered"}


def test_a_new_routing_key_given_by_patch_reaches_the_simulator(
    client: httpx.Client, fleet: Fleet, sim: Simulator,
) -> None:
    old, new = random_routing_key(), random_routing_key()
    client.post("/v1/destinations", json={"name": "acme", "routing_key": old,
                                          "events_url": sim.events_url})
    first = client.post("/v1/events", json=trigger("acme", "k1")).json()["event_id"]
    fleet.wait_final([first])
    changed = client.patch("/v1/destinations/acme", json={"routing_key": new})
    assert changed.status_code == 200
    assert changed.json()["routing_key"]["fingerprint"] == fingerprint(new)
    second = client.post("/v1/events", json=trigger("acme", "k2")).json()["event_id"]
    assert fleet.wait_final([second]) == {second: "delivered"}
    assert (received_keys(sim, "k1"), received_keys(sim, "k2")) == (
        [key_hash(old)], [key_hash(new)])


def test_remove_with_pending_events_409_then_forced_they_are_dead_lettered(
    client: httpx.Client, fleet: Fleet, sim: Simulator,
) -> None:
    client.post("/v1/destinations", json={"name": "acme", "routing_key": random_routing_key(),
                                          "events_url": sim.events_url})
    # a hold window keeps its events pending (and goes with the destination)
    assert client.post("/v1/maintenance-windows", json={
        "destination": "acme", "start": "2000-01-01T00:00:00Z", "end": "2999-01-01T00:00:00Z",
        "mode": "hold", "id": "hold-acme"}).status_code == 201
    ids = client.post("/v1/events/batch", json={"events": [
        trigger("acme", "p1"), trigger("acme", "p2")]}).json()["event_ids"]
    wait_until(lambda: client.get("/v1/maintenance-windows").json()["windows"][0]["holding"]
               == 2, timeout=30, message="both events held")
    refused = client.delete("/v1/destinations/acme")
    assert refused.status_code == 409
    [problem] = problems(refused)
    assert problem.startswith("destination 'acme' has 2 pending event(s)")
    assert client.get("/v1/destinations/acme").json()["state"]["pending_events"] == 2

    removed = client.delete("/v1/destinations/acme", params={"force": "true"})
    assert removed.status_code == 200
    assert (removed.json()["pending_events"], removed.json()["windows_removed"]) == (
        2, ["hold-acme"])
    assert fleet.wait_final(ids) == dict.fromkeys(ids, "dead_lettered")
    letters = client.get("/v1/dead-letters", params={"reason": "destination_removed"}).json()
    assert sorted(d["event_id"] for d in letters["dead_letters"]) == sorted(ids)

    # added again, a replay delivers them
    key = random_routing_key()
    client.post("/v1/destinations", json={"name": "acme", "routing_key": key,
                                          "events_url": sim.events_url})
    replay = client.post("/v1/dead-letters/replay", json={
        "destination": "acme", "reason": "destination_removed"}).json()
    assert replay["tally"] == {"queued": 2}
    assert fleet.wait_final(ids) == dict.fromkeys(ids, "delivered")
    assert received_keys(sim, "p1") == [key_hash(key)]
