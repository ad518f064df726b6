"""A local, stdlib-only imitation of PagerDuty's Events API v2 and REST API v2 for tests and
load runs (its TLS certificates are made with ``cryptography``).

``Simulator`` serves ``POST /v2/enqueue`` with PagerDuty's validation, 202/400/429 answers and
de-duplication semantics, plus injectable faults (latency, 5xx, throttling, dropped sockets)
and ``/_sim/*`` endpoints to inspect and steer it. Routing keys are never stored or shown;
they appear only as ``sha256(routing_key)[:12]``. Incident changes go out as signed webhooks
v3 (`simulator.webhooks`).

On a second port, over HTTPS with a throwaway CA (``Simulator.rest_url``,
``Simulator.ca_file``), it plays PagerDuty's REST API v2 (`simulator.rest`): token auth
(``DEMO_API_TOKEN`` by default), services, maintenance windows, webhook subscriptions that
really receive signed webhooks, incidents, with REST faults of their own.
"""

from simulator.faults import Faults
from simulator.rest import DEMO_API_TOKEN
from simulator.server import Simulator, serve

__all__ = ["DEMO_API_TOKEN", "Faults", "Simulator", "serve"]
