"""What `send()` accepts, a worker can read and deliver: details at the nesting limit reach
PagerDuty whole (220 levels used to be accepted and then dead-lettered as `malformed`)."""

from __future__ import annotations

import pytest

from config.errors import InvalidEventError
from producer.event import MAX_DETAILS_DEPTH
from tests.conftest import Fleet
from tests.producer.test_event import nested


def test_details_at_the_nesting_limit_are_delivered_and_deeper_ones_refused(
    fleet: Fleet,
) -> None:
    details = nested(MAX_DETAILS_DEPTH)
    [event_id] = fleet.producer.send_many([{
        "action": "trigger", "monitor_id": "1", "incident_id": "deep", "summary": "[DOWN] x",
        "details": details}])
    assert fleet.wait_final([event_id]) == {event_id: "delivered"}
    [received] = fleet.sim.received()
    assert received["body"]["payload"]["custom_details"]["k"] == details["k"]

    with pytest.raises(InvalidEventError, match="MAX_DETAILS_DEPTH"):
        fleet.producer.send({"action": "trigger", "monitor_id": "1", "incident_id": "deeper",
                             "summary": "[DOWN] x", "details": nested(MAX_DETAILS_DEPTH + 1)})
