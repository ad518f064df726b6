"""`/v1/maintenance-windows`, `/v1/status`, `/healthz` and `/metrics` over HTTP."""

from __future__ import annotations

import httpx

from api.server import ApiService
from tests.api.conftest import problems
from tests.cli.operate.support import event
from tests.conftest import Fleet


def test_maintenance_windows_add_list_remove(client: httpx.Client, fleet: Fleet) -> None:
    assert client.get("/v1/maintenance-windows").json() == {"windows": []}
    added = client.post("/v1/maintenance-windows", json={
        "destination": "prod", "monitors": ["9"], "start": "2000-01-01T00:00:00Z",
        "end": "2999-01-01T00:00:00Z", "mode": "suppress", "reason": "api test",
        "id": "quiet"})
    assert added.status_code == 201
    window = added.json()["window"]
    assert (window["id"], window["mode"], window["origin"]) == ("quiet", "suppress", "runtime")
    assert window["active_until"].startswith("2999-01-01") and window["holding"] == 0
    # its destination has no REST credentials: nothing to show of PagerDuty
    assert window["sync"] is None and window["pagerduty_window_id"] is None
    kept = client.post("/v1/maintenance-windows", json={
        "destination": "prod", "weekly": "sun 02:00-04:00", "sync": False, "id": "local"})
    assert kept.status_code == 201
    stored = fleet.redis.hget(fleet.keys.maintenance, "local")
    assert '"sync":false' in stored.replace(" ", "")
    assert client.delete("/v1/maintenance-windows/local").status_code == 200
    [listed] = client.get("/v1/maintenance-windows").json()["windows"]
    assert listed == window
    # the workers apply it: an event of monitor 9 ends suppressed
    event_id = client.post("/v1/events", json=event(9, 90, "trigger")).json()["event_id"]
    assert fleet.wait_final([event_id]) == {event_id: "suppressed"}

    removed = client.delete("/v1/maintenance-windows/quiet")
    assert removed.status_code == 200 and removed.json() == {"id": "quiet", "woken": 0}
    gone = client.delete("/v1/maintenance-windows/quiet")
    assert gone.status_code == 404 and problems(gone) == ["no maintenance window 'quiet'"]

    bad = client.post("/v1/maintenance-windows", json={"destination": "nope",
                                                       "weekly": "sun 02:00-04:00"})
    assert bad.status_code == 422
    assert problems(bad) == ["destination: unknown destination 'nope' "
                             "(configured: prod, staging)"]
    bad = client.post("/v1/maintenance-windows", json={"destination": "prod",
                                                       "weekly": "sunday", "mode": "nap"})
    assert bad.status_code == 422
    found = problems(bad)
    assert any(p.startswith("weekly: must look like") for p in found)
    assert any(p.startswith("mode:") for p in found)
    assert problems(client.post("/v1/maintenance-windows", json={"destination": "prod"})) == [
        "window: give either start and end, or weekly"]


def test_status_as_the_status_command_shows_it(client: httpx.Client, fleet: Fleet) -> None:
    fleet.sim.set_faults(force_status=400)
    rejected = client.post("/v1/events", json=event(1, 1, "trigger")).json()["event_id"]
    fleet.wait_final([rejected])
    status = client.get("/v1/status").json()
    assert status["dead_letters"] == {"rejected": 1} and status["dead_letters_total"] == 1
    assert status["healthy"] is True and status["verdict"] == "nothing pending"
    assert len(status["workers"]) == 1 and status["workers_error"] is None
    assert status["maintenance_sync"] == {"synced": 0, "pending": 0, "failed": 0,
                                          "first_failure": None}
    assert set(status["destinations"]) == {"prod", "staging"}
    quick = client.get("/v1/status", params={"ping": "false", "max_age": 5}).json()
    assert quick["workers"] is None and quick["workers_error"] == "not asked"
    assert quick["max_pending_age_seconds"] == 5


def test_healthz_needs_no_token_and_says_nothing_more(api: ApiService) -> None:
    response = httpx.get(api.url + "/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_metrics_count_requests_by_route_and_status(api: ApiService,
                                                    client: httpx.Client) -> None:
    client.get("/v1/dead-letters/abcdefgh0")
    client.get("/v1/dead-letters/abcdefgh1")
    httpx.get(api.url + "/v1/status")
    text = httpx.get(api.url + "/metrics").text
    assert ('monitao_pd_api_requests_total{method="GET",route="/v1/dead-letters/{event_id}",'
            'status="404"} 2.0') in text
    assert ('monitao_pd_api_requests_total{method="GET",route="/v1/status",status="401"} 1.0'
            in text)
    assert ('monitao_pd_api_request_duration_seconds_count{method="GET",'
            'route="/v1/dead-letters/{event_id}"} 2.0') in text
