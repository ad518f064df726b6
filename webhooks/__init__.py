"""Acknowledgements from PagerDuty: a receiver for its signed webhooks v3.

The receiver (`Receiver`, an ASGI app served by uvicorn) verifies each delivery's
signature and queues it on a Redis stream; the processor (`Processor`) maps it to the
MoniTao incident behind its dedup_key, records it in the incident's timeline and queues
MoniTao's callback. `WebhookService` runs both; `monitao-pd webhooks` is the command.
"""

from webhooks.events import NotAnEvent, WebhookEvent, incident_candidates, parse
from webhooks.processor import Processor
from webhooks.receiver import Receiver
from webhooks.service import WebhookService, serve
from webhooks.signature import SIGNATURE_HEADER, sign, signature_header, verify

__all__ = [
    "SIGNATURE_HEADER",
    "NotAnEvent",
    "Processor",
    "Receiver",
    "WebhookEvent",
    "WebhookService",
    "incident_candidates",
    "parse",
    "serve",
    "sign",
    "signature_header",
    "verify",
]
