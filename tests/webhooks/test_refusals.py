"""Refused requests: every one counted, the log told at a bounded rate (a clock the test
moves; the metric is the real one)."""

from __future__ import annotations

import logging
import re

import pytest

from tests.webhooks.conftest import counted
from webhooks.refusals import Refusals

LOGGER = "tests.refusals"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def told(messages: list[str]) -> int:
    """How many refusals the log lines account for: one per single line, N per summary."""
    total = 0
    for message in messages:
        summed = re.match(r"webhooks: refused ([\d,]+) more request", message)
        total += int(summed.group(1).replace(",", "")) if summed else 1
    return total


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def refusals(clock: Clock, caplog: pytest.LogCaptureFixture) -> Refusals:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    return Refusals(logging.getLogger(LOGGER), 60.0, clock=clock)


def test_a_flood_in_one_interval_is_one_line_then_one_summary(
        refusals: Refusals, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    before = counted("other", "unauthorized")
    for n in range(5000):
        clock.now += 0.001
        refusals.refused(f"10.0.0.{n % 5}", "unauthorized", "missing or wrong signature")
    assert lines(caplog) == ["webhooks: refused a request from 10.0.0.0: missing or wrong "
                             "signature (more within 60 s are summed up in one line)"]
    assert counted("other", "unauthorized") == before + 5000
    refusals.flush()
    assert lines(caplog)[1] == (
        "webhooks: refused 4,999 more requests in 5 s: 4,999 missing or wrong signature; "
        "from 10.0.0.1 (1,000), 10.0.0.2 (1,000), 10.0.0.3 (1,000), 2 other addresses")
    refusals.flush()  # nothing held back: nothing more to say
    assert len(lines(caplog)) == 2


def test_a_long_flood_costs_two_lines_an_interval_and_every_refusal_is_told(
        refusals: Refusals, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    before = (counted("other", "too_large"), counted("other", "not_json"))
    sent = 0
    for second in range(600):  # ten minutes, 10 a second, two reasons
        for n in range(10):
            clock.now = 1000.0 + second + n / 10
            too_large = n % 2 == 0
            refusals.refused("192.0.2.7", "too_large" if too_large else "not_json",
                             "body over 262144 bytes" if too_large else "body is not JSON")
            sent += 1
    refusals.flush()
    messages = lines(caplog)
    assert len(messages) <= 2 * 10 + 2
    assert told(messages) == sent == 6000
    summed = [int(m.group(1).replace(",", "")) for m in
              (re.match(r"webhooks: refused ([\d,]+) more", line) for line in messages) if m]
    assert summed and max(summed) < 600  # each line tallies its own interval (10 a second)
    assert re.search(r"\d+ body over 262144 bytes, \d+ body is not JSON|"
                     r"\d+ body is not JSON, \d+ body over 262144 bytes", messages[1])
    assert (counted("other", "too_large"), counted("other", "not_json")) == (
        before[0] + 3000, before[1] + 3000)


def test_refusals_far_apart_are_each_logged(
        refusals: Refusals, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(3):
        refusals.refused("198.51.100.1", "unauthorized", "missing or wrong signature")
        clock.now += 61
    assert len(lines(caplog)) == 3
    assert all(m.startswith("webhooks: refused a request from 198.51.100.1") for m in
               lines(caplog))


def test_a_flood_from_many_addresses_tallies_a_bounded_number_of_them(
        refusals: Refusals, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    for n in range(5001):
        refusals.refused(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", "unauthorized",
                         "missing or wrong signature")
    assert len(refusals._clients) == 1000
    refusals.flush()
    summary = lines(caplog)[1]
    assert summary.startswith("webhooks: refused 5,000 more requests in 0 s")
    assert summary.endswith("(1), more than 997 other addresses")
