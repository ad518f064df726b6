"""uvicorn's HTTP/1.1 protocol (h11) with a deadline for reading each request.

uvicorn bounds the wait between two requests on a connection (keep-alive), not the time a
client takes to send one: a connection that trickles its headers or its body was held for
ever, and once `limit_concurrency` connections were held every request got 503. PagerDuty
sends a whole webhook at once and gives up on an answer after 5 s, so here a request must
be read whole, head and body, within `read_timeout` of the connection opening (or of the
request's first byte on a kept-alive connection). Past that the connection is closed
without an answer: PagerDuty retries a delivery that got none, where a 408 it would drop.
The refusal is counted (`timeout`) and logged through `Refusals`.

uvicorn's own per-request warnings (not HTTP; over the concurrency limit) are refusals too:
they go to `Refusals` (counted `bad_request`, `overloaded`) rather than a line each.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from webhooks.refusals import Refusals

# uvicorn's warnings that each stand for one refused request: (metric result, reason).
UVICORN_REFUSALS = {
    "Invalid HTTP request received.": ("bad_request", "not a valid HTTP request (400)"),
    "Exceeded concurrency limit.": ("overloaded", "over the concurrency limit (503)"),
}


class BoundedH11Protocol(H11Protocol):
    """One connection: uvicorn's h11 protocol, each request read within `read_timeout`."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, read_timeout: float,
                 refusals: Refusals) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.read_timeout = read_timeout
        self.refusals = refusals
        self.logger = _RefusalsLogger(self.logger, self)
        self._deadline: asyncio.TimerHandle | None = None

    @property
    def client_address(self) -> str:
        """The peer's address, as refusals name it."""
        return self.client[0] if self.client else "?"

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is bounded too

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Keep the deadline while a request is partly read; drop it once it is whole (or
        between requests, where uvicorn's keep-alive timeout applies)."""
        state = self.conn.their_state
        partial = state is h11.SEND_BODY or (
            state is h11.IDLE and bool(self.conn.trailing_data[0]))
        if partial:
            self._arm()
        else:
            self._disarm()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        part = "body" if self.conn.their_state is h11.SEND_BODY else "headers"
        self.refusals.refused(self.client_address, "timeout",
                              f"request {part} not received within {self.read_timeout:g} s")
        # The receiver, if it was reading the body, sees a disconnect and records nothing.
        self.transport.close()


class _RefusalsLogger:
    """uvicorn's logger for one connection, with the warnings that stand for a refused
    request sent to `Refusals`; everything else goes to uvicorn's logger as before."""

    def __init__(self, logger: logging.Logger, protocol: BoundedH11Protocol) -> None:
        self._logger = logger
        self._protocol = protocol

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        refusal = UVICORN_REFUSALS.get(msg) if not args else None
        if refusal is None:
            self._logger.warning(msg, *args, **kwargs)
        else:
            self._protocol.refusals.refused(self._protocol.client_address, *refusal)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)
