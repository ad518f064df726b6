"""A webhook endpoint for the simulator's tests: it keeps each body with its headers and can
answer the first few with 500."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Collector(ThreadingHTTPServer):
    """Keeps `(raw body, lower-cased headers)` of each POST it accepts (202), after
    answering `fail_first` 500s."""

    def __init__(self, fail_first: int = 0) -> None:
        self.got: list[tuple[bytes, dict[str, str]]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with server.lock:
                    failing = server.fail_first > 0
                    server.fail_first -= 1
                    if not failing:
                        server.got.append(
                            (raw, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(500 if failing else 202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        """The accepted bodies, parsed."""
        with self.lock:
            return [json.loads(raw) for raw, _ in self.got]


@contextmanager
def serving(fail_first: int = 0) -> Iterator[Collector]:
    """A `Collector` serving from a daemon thread until the block ends."""
    server = Collector(fail_first)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
