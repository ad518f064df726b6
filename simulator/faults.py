"""The simulator's injectable misbehaviour: one `Faults` for the Events API, another for REST.

Both are plain dataclasses changed while the simulator runs (attributes, ``set_faults``,
``set_rest_faults`` or ``POST /_sim/faults`` / ``POST /_sim/rest/faults``); `check_fault`
validates one change and names the problem.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["FAULT_NAMES", "Faults", "admit", "apply_faults", "check_fault"]


@dataclasses.dataclass
class Faults:
    """Misbehaviour to inject into ``/v2/enqueue``; change it while the simulator runs."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    rate_limit: int | None = 120
    force_status: int | None = None
    fail_next: int = 0
    drop_connections: bool = False
    # Delayed processing: the next `stall_next` requests (and each further one with
    # probability `stall_rate`) are held `stall_ms` before being processed as usual (their
    # event counts), then their connection is closed without an answer: a request PagerDuty
    # took whose answer was lost, processed after whatever the sender sent next.
    stall_next: int = 0
    stall_rate: float = 0.0
    stall_ms: float = 0.0
    # The body of the forced answers above (force_status, fail_next, error_rate) instead of
    # the usual one: an endpoint's own error text. `{routing_key}` in any of its strings is
    # replaced by the routing key received, as an endpoint that echoes it would answer.
    error_body: dict[str, Any] | None = None


FAULT_NAMES = tuple(field.name for field in dataclasses.fields(Faults))


def check_fault(name: str, value: Any) -> Any:
    """Return ``value`` normalised for fault ``name``, or raise ValueError naming the problem."""
    if name not in FAULT_NAMES:
        raise ValueError(f"unknown fault field '{name}'")
    if value is None and name in ("rate_limit", "force_status", "error_body"):
        return None
    if name == "error_body":
        if not isinstance(value, dict):
            raise ValueError(f"'{name}' must be a JSON object or null")
        return copy.deepcopy(value)
    if name == "drop_connections":
        if not isinstance(value, bool):
            raise ValueError(f"'{name}' must be a boolean")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{name}' must be a number")
    if name in ("latency_ms", "latency_jitter_ms", "error_rate", "stall_rate", "stall_ms"):
        rate = name in ("error_rate", "stall_rate")
        if not 0.0 <= value <= (1.0 if rate else math.inf):
            span = "between 0 and 1" if rate else "zero or more"
            raise ValueError(f"'{name}' must be {span}")
        return float(value)
    if not isinstance(value, int):
        raise ValueError(f"'{name}' must be an integer")
    if name.endswith("status") and not 200 <= value <= 599:
        raise ValueError(f"'{name}' must be an HTTP status between 200 and 599")
    if value < 0:
        raise ValueError(f"'{name}' must not be negative")
    return value


RATE_WINDOW_SECONDS = 60.0


def admit(windows: dict[str, deque[float]], key: str, limit: int | None, now: float) -> bool:
    """The `rate_limit` fault: count a request against `key`'s sliding minute in `windows`,
    unless `limit` requests are already in it (then it is refused: a 429)."""
    window = windows.setdefault(key, deque())
    while window and window[0] <= now - RATE_WINDOW_SECONDS:
        window.popleft()
    if limit is not None and len(window) >= limit:
        return False
    window.append(now)
    return True


def apply_faults(faults: Faults, changes: Mapping[str, Any],
                 lock: threading.Lock) -> dict[str, Any]:
    """Check every change (ValueError naming the first bad one, nothing changed), then
    make them all at once under `lock`; return the faults now."""
    checked = {name: check_fault(name, value) for name, value in changes.items()}
    with lock:
        for name, value in checked.items():
            setattr(faults, name, value)
        return dataclasses.asdict(faults)
