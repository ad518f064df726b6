"""A local, stdlib-only imitation of PagerDuty's Events API v2 for tests and load runs.

``Simulator`` serves ``POST /v2/enqueue`` with PagerDuty's validation, 202/400/429 answers and
de-duplication semantics, plus injectable faults (latency, 5xx, throttling, dropped sockets)
and ``/_sim/*`` endpoints to inspect and steer it. Routing keys are never stored or shown;
they appear only as ``sha256(routing_key)[:12]``.
"""

from simulator.server import Faults, Simulator, serve

__all__ = ["Faults", "Simulator", "serve"]
