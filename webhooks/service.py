"""Running the receiver: uvicorn serving `Receiver`, and a `Processor` thread beside it.

`WebhookService(settings).start()` serves on a free port from threads (tests, `make run`);
`serve(settings, host, port)` runs in the foreground until Ctrl-C or SIGTERM (the CLI).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
import uvicorn

from config import defaults
from config.connections import redis_client
from config.errors import ConfigurationError
from config.logs import configure_logging
from config.settings import Settings
from webhooks.processor import Processor
from webhooks.protocol import BoundedH11Protocol
from webhooks.receiver import Receiver

log = logging.getLogger(__name__)


def check_settings(settings: Settings) -> None:
    """Refuse to run with no way to verify a webhook: neither a secret in
    MONITAO_PD_WEBHOOK_SECRETS nor the key ring that opens the secrets of the subscriptions
    `webhooks subscribe` stores."""
    if not settings.webhook_secrets and settings.secret_keys is None:
        raise ConfigurationError([
            "MONITAO_PD_WEBHOOK_SECRETS or MONITAO_PD_SECRET_KEYS is required: a PagerDuty "
            "webhook subscription's secret (several, comma-separated, while one is rotated), "
            "or the key ring that opens the secrets of subscriptions made with `monitao-pd "
            "webhooks subscribe`"
        ])


def describe_secrets(settings: Settings) -> str:
    """Which secrets the receiver accepts, for its start-up line (never a secret)."""
    text = f"{len(settings.webhook_secrets)} secret(s) from MONITAO_PD_WEBHOOK_SECRETS"
    if settings.secret_keys is not None:
        text += ", and those of the subscriptions made with `webhooks subscribe`"
    return text


def uvicorn_config(app: Receiver, host: str, port: int, *,
                   read_timeout: float = defaults.WEBHOOK_READ_TIMEOUT_SECONDS,
                   limit_concurrency: int = defaults.WEBHOOK_CONCURRENCY_LIMIT,
                   **options: Any) -> uvicorn.Config:
    """uvicorn settings for the receiver: h11 with a deadline for reading each request
    (`BoundedH11Protocol`), no access log (it would be noise), short keep-alive, a bound
    on concurrent connections so a flood gets 503s, not memory."""
    protocol = functools.partial(BoundedH11Protocol, read_timeout=read_timeout,
                                 refusals=app.refusals)
    return uvicorn.Config(
        app, host=host, port=port, http=protocol, loop="asyncio", lifespan="off",
        access_log=False, server_header=False, timeout_keep_alive=5,
        limit_concurrency=limit_concurrency, log_config=None, **options,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, stopping gracefully on SIGTERM/Ctrl-C and then returning (uvicorn
    re-raises the signal after its shutdown, which would kill the process before the
    processor is stopped and the exit status returned)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT,
                                                                      signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, *_: object) -> None:
        if self.should_exit:  # a second Ctrl-C: do not wait for open connections
            self.force_exit = True
        self.should_exit = True


class WebhookService:
    """The receiver and its processor, each in a daemon thread; a context manager."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = 0, *,
                 client: redis.Redis | None = None,
                 refusal_log_seconds: float = defaults.WEBHOOK_REFUSAL_LOG_SECONDS,
                 read_timeout: float = defaults.WEBHOOK_READ_TIMEOUT_SECONDS,
                 limit_concurrency: int = defaults.WEBHOOK_CONCURRENCY_LIMIT,
                 **processor_options: Any) -> None:
        check_settings(settings)
        self.settings = settings
        self.host = host
        self._port = port
        self._http_options = dict(read_timeout=read_timeout,
                                  limit_concurrency=limit_concurrency)
        self._owns_client = client is None
        self.client = client or redis_client(settings)
        self.receiver = Receiver(self.client, settings, refusal_log_seconds=refusal_log_seconds)
        self.processor = Processor(self.client, settings, **processor_options)
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        assert self._socket is not None, "not started"
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        """The webhook endpoint, e.g. `http://127.0.0.1:8123/webhooks/pagerduty`."""
        return f"http://{self.host}:{self.port}/webhooks/pagerduty"

    def start(self, timeout: float = 10.0) -> WebhookService:
        """Bind, serve and process from daemon threads; return once it answers."""
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, self._port))
        self._server = _Server(uvicorn_config(self.receiver, self.host, self.port,
                                              log_level="warning", **self._http_options))
        self.processor.ensure_group()
        self._threads = [
            threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                             name="webhook-receiver", daemon=True),
            threading.Thread(target=self.processor.run, name="webhook-processor", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._threads[0].is_alive():
                self.stop()
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and processing, and close the socket."""
        if self._server is not None:
            self._server.should_exit = True
        self.processor.stop()
        for thread in self._threads:
            thread.join(10)
        self.receiver.refusals.flush()
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> WebhookService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve in the foreground (uvicorn handles Ctrl-C and SIGTERM) with the processor in
    a thread; return when stopped."""
    check_settings(settings)
    configure_logging(settings.log_level)
    client = redis_client(settings)
    processor = Processor(client, settings)
    processor.ensure_group()
    thread = threading.Thread(target=processor.run, name="webhook-processor", daemon=True)
    thread.start()
    receiver = Receiver(client, settings)
    server = _Server(uvicorn_config(receiver, host, port,
                                    log_level=settings.log_level.lower()))
    print(f"PagerDuty webhook receiver listening on http://{host}:{port}/webhooks/pagerduty "
          f"({describe_secrets(settings)})", flush=True)
    try:
        server.run()
    finally:
        processor.stop()
        thread.join(10)
        receiver.refusals.flush()
        client.close()
