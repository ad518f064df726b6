"""The request that tells MoniTao about a state change in PagerDuty: body and signature.

MoniTao verifies `X-MoniTao-Signature: v1=<hex HMAC-SHA256 of the raw body>` with the
shared `MONITAO_PD_CALLBACK_SECRET`, the same scheme PagerDuty uses for its webhooks, and
can de-duplicate redeliveries by `X-MoniTao-Delivery`.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-MoniTao-Signature"
DELIVERY_HEADER = "X-MoniTao-Delivery"


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for `body`."""
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def callback_request(change_json: str, event_id: str, secret: str) -> tuple[bytes, dict[str, str]]:
    """The raw body and headers of one callback (the stored change is sent as it is)."""
    body = change_json.encode()
    return body, {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body),
        DELIVERY_HEADER: event_id,
    }
