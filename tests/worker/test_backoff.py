"""Exponential backoff with full jitter, drawn from a seeded generator (no sleeping)."""

from __future__ import annotations

import random
import statistics

import pytest

from config import defaults
from worker.backoff import retry_delay

BASE = defaults.RETRY_BASE_SECONDS
CAP = defaults.RETRY_CAP_SECONDS


def draws(attempt: int, n: int, base: float = BASE, cap: float = CAP,
          seed: int = 20240501) -> list[float]:
    rng = random.Random(seed)
    return [retry_delay(attempt, base, cap, rng) for _ in range(n)]


@pytest.mark.parametrize(("base", "cap"), [(BASE, CAP), (0.5, 60.0), (1.5, 1.5), (2.0, 1000.0)])
@pytest.mark.parametrize("attempt", range(1, 31))
def test_delay_within_bounds(attempt: int, base: float, cap: float) -> None:
    ceiling = min(cap, base * 2 ** (attempt - 1))
    values = draws(attempt, 300, base, cap, seed=attempt)
    assert min(values) >= base / 10
    assert max(values) <= ceiling


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 7, 8, 20])
def test_ceiling_is_nearly_reached(attempt: int) -> None:
    """The draws use the whole range, so the documented ceiling is the real one."""
    ceiling = min(CAP, BASE * 2 ** (attempt - 1))
    assert max(draws(attempt, 2000)) > 0.95 * ceiling


def test_delay_grows_with_attempts() -> None:
    maxima = {attempt: max(draws(attempt, 2000)) for attempt in range(1, 7)}
    assert maxima[6] > maxima[1]
    assert maxima[1] <= BASE
    assert maxima[6] > 4 * BASE
    assert [maxima[a] < maxima[a + 1] for a in range(1, 6)] == [True] * 5


def test_delay_stops_growing_at_cap() -> None:
    # 5 s doubling reaches 300 s at attempt 7 (5 * 2**6 = 320 > 300)
    for attempt in (7, 8, 50):
        assert max(draws(attempt, 2000)) <= CAP
        assert max(draws(attempt, 2000)) > 0.95 * CAP


@pytest.mark.parametrize("attempt", [63, 64, 100, 1000, 10_000])
def test_no_overflow_for_huge_attempts(attempt: int) -> None:
    values = draws(attempt, 500)
    assert all(BASE / 10 <= v <= CAP for v in values)
    assert all(isinstance(v, float) for v in values)


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_attempt_below_one_refused(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt must be at least 1"):
        retry_delay(attempt, BASE, CAP, random.Random(1))


def test_full_jitter_spreads_draws() -> None:
    ceiling = min(CAP, BASE * 2 ** 4)  # attempt 5: 80 s
    values = draws(5, 2000)
    # uniform on [0, c] has stdev c / sqrt(12), about 0.29 c; equal jitter would give ~0.14 c
    assert statistics.stdev(values) > 0.2 * ceiling
    assert min(values) < 0.1 * ceiling
    assert 0.4 * ceiling < statistics.mean(values) < 0.6 * ceiling
    # workers that failed together do not retry together
    assert len({round(v, 3) for v in values}) > 1900


def test_floor_of_a_tenth_of_base() -> None:
    """Attempt 1's ceiling is base; draws below base/10 are lifted to it, never to zero."""
    values = draws(1, 2000)
    assert min(values) == BASE / 10
    assert sum(v == BASE / 10 for v in values) > 100


def test_seeded_generator_is_reproducible() -> None:
    assert draws(4, 50, seed=7) == draws(4, 50, seed=7)
    assert draws(4, 50, seed=7) != draws(4, 50, seed=8)


def test_module_random_used_without_generator() -> None:
    state = random.getstate()
    try:
        random.seed(99)
        first = [retry_delay(5, BASE, CAP) for _ in range(20)]
        random.seed(99)
        again = [retry_delay(5, BASE, CAP) for _ in range(20)]
    finally:
        random.setstate(state)
    assert first == again
    assert all(BASE / 10 <= v <= 80 for v in first)
