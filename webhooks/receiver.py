"""The receiver: a raw ASGI app that verifies PagerDuty's webhooks and queues them.

`POST /webhooks/pagerduty` (also `POST /`):

- a body over 256 KB (by Content-Length, or once more arrives) -> 413, unread;
- no `X-PagerDuty-Signature` `v1` signature of the raw body under a secret of
  `MONITAO_PD_WEBHOOK_SECRETS` or of a subscription stored by `webhooks subscribe` (read
  through `SubscriptionSecrets`: their version is looked at about once a second, and again
  after a failure, so a new subscription needs no restart) -> 401, nothing recorded (not
  even the delivery id);
- not JSON -> 400;
- a delivery id (`X-Webhook-Id`, else the body's hash), or a signed `event.id`, seen in
  the last `webhook_dedup_seconds` -> 200, nothing queued (the delivery id is not signed:
  a replayed body under a new one is caught by its event id);
- else the body goes on the inbox stream (with both ids marked seen, atomically) -> 202.

The work is done later by the processor, so the answer comes well within PagerDuty's 5 s;
if Redis does not answer in `REDIS_DEADLINE_SECONDS` the answer is 503 and PagerDuty
retries. `GET /healthz` answers 200, `GET /metrics` the process's webhook counters.

Every refusal (401, 413, 400) is counted in the metric and logged through `refusals`, which
bounds the lines a flood of them writes. A request not read whole in time is closed
unanswered by the protocol (`webhooks.protocol`); the body read so far is dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from config import defaults
from config.idempotent import IdempotentScript
from config.keyspace import Keyspace
from config.settings import Settings
from webhooks.events import metric_type
from webhooks.refusals import Refusals
from webhooks.signature import verify
from webhooks.subscriptions import SubscriptionSecrets
from worker.metrics import WEBHOOKS, record_webhook

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PATHS = ("/webhooks/pagerduty", "/")
# PagerDuty gives up on an answer after 5 s; Redis gets this long of it.
REDIS_DEADLINE_SECONDS = 3.0
# Reading the subscriptions' secrets gets this long of it (the queueing still needs its
# own); past it the secrets read before are used.
SECRETS_DEADLINE_SECONDS = 1.0
# A delivery id longer than this is replaced by its hash in the key name.
MAX_WEBHOOK_ID_LENGTH = 128
# An event id (PagerDuty's are 26 letters and digits) is used in its key name as it is when
# it looks like this; any other (long, odd characters) is replaced by its hash.
PLAIN_EVENT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

# KEYS: 1 delivery seen, 2 inbox, 3 event seen ('' when the body names no event id)
# ARGV: 1 dedup ms, 2 body, 3 webhook id
# Marks both ids seen and queues the body in one step: 1 queued, 0 the delivery id was
# seen before, -1 the event id was.
ADMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if KEYS[3] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], '1', 'PX', ARGV[1]) end
redis.call('XADD', KEYS[2], '*', 'body', ARGV[2], 'webhook_id', ARGV[3])
return 1
"""


class BodyTooLarge(Exception):
    """More than the limit arrived."""


class ClientGone(Exception):
    """The connection closed before the whole body arrived (the client left, or the
    request was not read within the protocol's deadline): there is nobody to answer."""


class Receiver:
    """The ASGI app. `client` is a (blocking) Redis client, used from worker threads."""

    def __init__(self, client: redis.Redis, settings: Settings, *,
                 max_body_bytes: int = defaults.WEBHOOK_MAX_BODY_BYTES,
                 refusal_log_seconds: float = defaults.WEBHOOK_REFUSAL_LOG_SECONDS,
                 subscriptions: SubscriptionSecrets | None = None) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keyspace(settings.key_prefix)
        self.subscriptions = subscriptions or SubscriptionSecrets(client, self.keys,
                                                                  settings.key_ring())
        self.max_body_bytes = max_body_bytes
        self.refusals = Refusals(log, refusal_log_seconds)
        self._admit = IdempotentScript(client, ADMIT, self.keys)
        # The configured secrets are read when a body is verified, never copied into a plain
        # attribute; the subscriptions' are held by `subscriptions` (no repr shows them).
        self._metrics = CollectorRegistry(auto_describe=True)
        self._metrics.register(WEBHOOKS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "GET" and path == "/healthz":
            await _answer(send, 200, {"ok": True})
        elif method == "GET" and path == "/metrics":
            await _answer_raw(send, 200, generate_latest(self._metrics), CONTENT_TYPE_LATEST)
        elif path not in PATHS:
            await _answer(send, 404, {"error": "not found"})
        elif method != "POST":
            await _answer(send, 405, {"error": "method not allowed"})
        else:
            answer = await self.handle(scope, receive)
            if answer is not None:
                await _answer(send, *answer)

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]] | None:
        """Decide the answer to one webhook delivery (None: the client is gone)."""
        headers = _headers(scope)
        client = (scope.get("client") or ("?", 0))[0]
        too_large = f"body over {self.max_body_bytes} bytes"
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            self.refusals.refused(client, "too_large", too_large)
            return 413, {"error": too_large}
        try:
            raw = await self._read(receive)
        except BodyTooLarge:
            self.refusals.refused(client, "too_large", too_large)
            return 413, {"error": too_large}
        except ClientGone:  # a part of a body is no delivery: nothing to verify or record
            return None
        if not await self._verify(headers.get("x-pagerduty-signature"), raw):
            self.refusals.refused(client, "unauthorized", "missing or wrong signature")
            return 401, {"error": "missing or wrong X-PagerDuty-Signature"}
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            self.refusals.refused(client, "not_json", "body is not JSON")
            return 400, {"error": "body is not JSON"}
        event = body.get("event") if isinstance(body, dict) else None
        event_type = metric_type(event.get("event_type") if isinstance(event, dict) else None)
        event_id = _event_id_key(event.get("id") if isinstance(event, dict) else None)
        webhook_id = headers.get("x-webhook-id") or ""
        if not webhook_id or len(webhook_id) > MAX_WEBHOOK_ID_LENGTH:
            webhook_id = "sha256:" + hashlib.sha256(webhook_id.encode() + raw).hexdigest()
        try:
            queued = await asyncio.wait_for(
                asyncio.to_thread(self._queue, webhook_id, event_id, raw),
                REDIS_DEADLINE_SECONDS)
        except (TimeoutError, redis.RedisError, OSError) as exc:
            log.warning("webhooks: could not queue delivery %s (%s); PagerDuty will retry",
                        webhook_id, exc.__class__.__name__)
            return 503, {"error": "temporarily unavailable"}
        if queued != 1:
            record_webhook(event_type, "duplicate")
            return 200, {"status": "duplicate", "webhook_id": webhook_id,
                         "seen": "X-Webhook-Id" if queued == 0 else "event.id"}
        return 202, {"status": "queued", "webhook_id": webhook_id}

    async def _verify(self, header: str | None, raw: bytes) -> bool:
        """Whether the body is signed with a configured or a subscription's secret; after
        a failure the subscriptions are looked at again (one may have just been made)."""
        await self._refresh(failed=False)
        configured = [secret.get_secret_value() for secret in self.settings.webhook_secrets]
        if verify(header, raw, [*configured, *self.subscriptions.current()]):
            return True
        if not await self._refresh(failed=True):
            return False
        return verify(header, raw, [*configured, *self.subscriptions.current()])

    async def _refresh(self, *, failed: bool) -> bool:
        """Re-read the subscriptions' secrets if due (in a thread, within the Redis
        deadline); whether they changed. A slow Redis keeps the secrets read before."""
        if not self.subscriptions.due(failed=failed):
            return False
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self.subscriptions.refresh, failed=failed),
                SECRETS_DEADLINE_SECONDS)
        except TimeoutError:
            return False

    def _queue(self, webhook_id: str, event_id: str | None, raw: bytes) -> int:
        dedup_ms = int(self.settings.webhook_dedup_seconds * 1000)
        event_seen = self.keys.webhook_event_seen(event_id) if event_id else ""
        return int(self._admit(keys=[self.keys.webhook_seen(webhook_id),
                                     self.keys.webhook_inbox, event_seen],
                               args=[dedup_ms, raw, webhook_id]))

    async def _read(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _event_id_key(event_id: object) -> str | None:
    """The signed `event.id` as its key name holds it (None: the body names none)."""
    if not isinstance(event_id, str) or not event_id:
        return None
    if PLAIN_EVENT_ID.fullmatch(event_id):
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])}


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    await _answer_raw(send, status, json.dumps(body).encode(), "application/json")


async def _answer_raw(send: Send, status: int, data: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
