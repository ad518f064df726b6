"""When to try a failed delivery again: exponential backoff with full jitter."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 for the first failure).

    Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))], so workers that failed
    together do not retry together. A floor of a tenth of `base` keeps a retry from
    landing immediately.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be at least 1, got {attempt}")
    ceiling = min(cap, base * 2 ** min(attempt - 1, 62))
    return max(base / 10, (rng or random).uniform(0, ceiling))
