"""Limits on what a request may cost before a handler sees it: body size and read time.

A pure ASGI middleware: a declared `Content-Length` over the limit is refused at once
(413) without reading the body; a body that turns out longer while streamed, or that takes
longer than the read timeout to arrive, raises here, inside the handler's read, and the
app's error handlers answer 413 or 408.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem


class BodyTooLarge(Exception):
    """The request body exceeded the limit."""


class BodyTooSlow(Exception):
    """The request body did not arrive within the read timeout."""


class RequestLimits:
    """Refuses bodies over `max_body_bytes` and bodies slower than `read_timeout` s."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, read_timeout: float) -> None:
        self.app, self.max_body_bytes, self.read_timeout = app, max_body_bytes, read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await too_large(self.max_body_bytes)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except TimeoutError:
                raise BodyTooSlow() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def too_large(limit: int) -> Any:
    """The 413 answer."""
    return problem(413, f"the request body is over {limit} bytes",
                   [f"body: at most {limit} bytes"])


def too_slow(timeout: float) -> Any:
    """The 408 answer."""
    return problem(408, f"the request body did not arrive within {timeout:g} s",
                   [f"body: not received within {timeout:g} s"])
