"""Running the API: `serve()` in the foreground (`monitao-pd api`), `ApiService` from a
thread on a free port (tests, benchmarks)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import uvicorn

from api.app import create_app
from config.destinations import Destination
from config.settings import Settings


def uvicorn_config(app: Any, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn settings for the API: h11, no access log (metrics count requests; a line per
    request is noise), short keep-alive, bounded concurrent connections (a flood gets
    503s, not memory)."""
    return uvicorn.Config(app, host=host, port=port, http="h11", loop="asyncio",
                          lifespan="on", access_log=False, server_header=False,
                          timeout_keep_alive=5, limit_concurrency=1000, log_config=None,
                          **options)


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM (a graceful shutdown)."""
    app = create_app(settings)
    server = uvicorn.Server(uvicorn_config(app, host, port,
                                           log_level=settings.log_level.lower()))
    print(f"MoniTao PagerDuty API listening on http://{host}:{port} "
          f"(OpenAPI at /openapi.json, docs at /docs)", flush=True)
    server.run()


class ApiService:
    """The API served from a daemon thread; a context manager."""

    def __init__(self, settings: Settings, destinations: Mapping[str, Destination] | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = create_app(settings, destinations)
        self.host, self._port = host, port
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. `http://127.0.0.1:8123`."""
        assert self._socket is not None, "not started"
        return f"http://{self.host}:{self._socket.getsockname()[1]}"

    def start(self, timeout: float = 10.0) -> ApiService:
        """Bind and serve; return once it answers."""
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, self._port))
        port = self._socket.getsockname()[1]
        self._server = uvicorn.Server(uvicorn_config(self.app, self.host, port,
                                                     log_level="warning"))
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._socket]},
                                        name="monitao-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError("the API did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()

    def __enter__(self) -> ApiService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
