"""`monitao-pd webhooks`: receive PagerDuty's webhooks v3 and sync them to MoniTao."""

from __future__ import annotations

import click

from config.settings import load_settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8282, show_default=True)
def webhooks(host: str, port: int) -> int:
    """Serve PagerDuty's webhooks v3 (POST /webhooks/pagerduty), signed with a secret from
    MONITAO_PD_WEBHOOK_SECRETS, and record each incident state change in its timeline."""
    from webhooks.service import serve

    serve(load_settings(), host, port)
    return 0
