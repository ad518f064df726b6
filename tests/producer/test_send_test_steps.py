"""The send test step by step (`start_test(...).steps()`, as the console shows it): each
event is reported when sent and again with its outcome, and an abandoned run releases the
producer it opened."""

from __future__ import annotations

import pytest

from config.errors import NotFoundError
from producer.send_test import start_test
from tests.conftest import Fleet


def test_each_event_is_reported_sent_then_with_its_outcome(fleet: Fleet) -> None:
    run = start_test(fleet.settings, "prod", timeout=30, producer=fleet.producer)
    steps = []
    for step in run.steps():
        if step.result is None:  # just sent: not final yet when the step is seen
            assert fleet.state(step.event_id) in ("pending", "delivered")
        steps.append(step)
    assert [(s.action, s.result is None) for s in steps] == [
        ("trigger", True), ("trigger", False), ("resolve", True), ("resolve", False)]
    assert [s.result["state"] for s in steps if s.result] == ["delivered", "delivered"]
    assert steps[0].event_id == steps[1].event_id != steps[2].event_id
    assert run.incident_id.startswith("test-")
    sent = [e["event_action"] for e in fleet.sim.received()
            if e["dedup_key"].endswith(run.incident_id)]
    assert sent == ["trigger", "resolve"]


def test_an_unknown_destination_is_refused_before_anything_is_sent(fleet: Fleet) -> None:
    with pytest.raises(NotFoundError, match="unknown destination 'nope'"):
        start_test(fleet.settings, "nope", timeout=5, producer=fleet.producer)
    assert fleet.sim.received() == []
