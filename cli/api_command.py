"""`monitao-pd api`: the HTTP API for MoniTao's application (api/)."""

from __future__ import annotations

import click

from config import defaults
from config.settings import load_settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=defaults.API_PORT,
              show_default=True)
def api(host: str, port: int) -> int:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs) until Ctrl-C or SIGTERM.

    Bearer tokens come from `monitao-pd tokens create`. Replicas share nothing but Redis:
    run as many as you like behind a load balancer.
    """
    from api.server import serve

    serve(load_settings(), host, port)
    return 0
